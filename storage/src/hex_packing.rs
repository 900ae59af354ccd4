//! SHA-256 hashes in a value's JSON, stored as their 32 bytes rather than 64 hex characters.
//!
//! Every audit record carries two hashes (its own and the one before it), and an alert's first
//! record the hash of its raw payload: as hex, they are a quarter of a grouped alert's stored
//! record, and no compression shrinks them (they are random). Packed, each is 33 bytes
//! instead of 66. Packing is exact and blind to meaning: a double quote, 64 lower-case hex
//! digits and a double quote become a zero byte and the 32 bytes they spell, and unpacking gives
//! back the very same JSON. JSON never holds a raw zero byte (control characters are escaped),
//! so a zero byte can only be a packed hash; a value that somehow holds one is left as it is.

/// Stands for `"` + 64 hex digits + `"` in packed bytes; followed by the 32 bytes.
const PACKED_HASH: u8 = 0;
/// A hash as JSON text: quotes and 64 lower-case hex digits.
const HEX_TEXT: usize = 66;
const HASH_BYTES: usize = 32;

/// `json` with every hex SHA-256 string packed, or `None` when there is none (or the text holds
/// a zero byte, which packing could not tell apart).
pub(crate) fn pack(json: &[u8]) -> Option<Vec<u8>> {
    if memchr::memchr(PACKED_HASH, json).is_some() {
        return None;
    }
    // Only a double quote can start a hash: one scan finds them all (this runs on every value
    // a change writes, and a case's JSON has hundreds of quotes: searching afresh from each one
    // was 2% of the process's time with distinct alerts at 64 senders), and the text between
    // hashes is copied whole.
    let mut packed: Option<Vec<u8>> = None;
    let mut copied_up_to = 0;
    for quote in memchr::memchr_iter(b'"', json) {
        // The closing quote of a hash just packed.
        if quote < copied_up_to {
            continue;
        }
        let Some(hash) = hex_hash_at(json, quote) else { continue };
        let packed = packed.get_or_insert_with(|| Vec::with_capacity(json.len()));
        packed.extend_from_slice(&json[copied_up_to..quote]);
        packed.push(PACKED_HASH);
        packed.extend_from_slice(&hash);
        copied_up_to = quote + HEX_TEXT;
    }
    let mut packed = packed?;
    packed.extend_from_slice(&json[copied_up_to..]);
    Some(packed)
}

/// Appends to `json` the JSON `packed` was made from.
pub(crate) fn unpack_into(packed: &[u8], json: &mut Vec<u8>) -> Result<(), String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hashes = memchr::memchr_iter(PACKED_HASH, packed).count();
    json.reserve(packed.len() + hashes * (HEX_TEXT - 1 - HASH_BYTES));
    let mut at = 0;
    while let Some(offset) = memchr::memchr(PACKED_HASH, &packed[at..]) {
        let marker = at + offset;
        json.extend_from_slice(&packed[at..marker]);
        let hash = packed
            .get(marker + 1..marker + 1 + HASH_BYTES)
            .ok_or_else(|| format!("a packed hash at byte {marker} is cut short"))?;
        json.push(b'"');
        for byte in hash {
            json.push(HEX[usize::from(byte >> 4)]);
            json.push(HEX[usize::from(byte & 0x0f)]);
        }
        json.push(b'"');
        at = marker + 1 + HASH_BYTES;
    }
    json.extend_from_slice(&packed[at..]);
    Ok(())
}

/// The 32 bytes of a `"<64 lower-case hex digits>"` starting at `at`, if one does.
fn hex_hash_at(json: &[u8], at: usize) -> Option<[u8; HASH_BYTES]> {
    let text = json.get(at..at + HEX_TEXT)?;
    if text[0] != b'"' || text[HEX_TEXT - 1] != b'"' {
        return None;
    }
    let digit = |byte: u8| match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    };
    let mut hash = [0_u8; HASH_BYTES];
    for (index, pair) in text[1..HEX_TEXT - 1].chunks_exact(2).enumerate() {
        hash[index] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(hash)
}
