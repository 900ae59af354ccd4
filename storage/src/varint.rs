//! LEB128 varints: seven bits a byte, low bits first, the top bit set on every byte but the
//! last. Small numbers (counts, the distance between close sequence numbers) take a byte or two.

/// Why bytes are not a varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// More than 64 bits.
    TooLong,
    /// The bytes end inside the number.
    Truncated,
}

/// Appends `value` as a varint.
pub(crate) fn push_varint(bytes: &mut Vec<u8>, value: u64) {
    let mut rest = value;
    loop {
        let low = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            bytes.push(low);
            return;
        }
        bytes.push(low | 0x80);
    }
}

/// Reads one varint from the front of `input`, leaving `input` after it.
pub(crate) fn read_varint(input: &mut &[u8]) -> Result<u64, VarintError> {
    let (mut value, mut shift) = (0_u64, 0_u32);
    for (index, &byte) in input.iter().enumerate() {
        if shift > 63 {
            return Err(VarintError::TooLong);
        }
        value |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            *input = &input[index + 1..];
            return Ok(value);
        }
    }
    Err(VarintError::Truncated)
}

/// A signed number as an unsigned one that stays small when the number is near zero either way
/// (zigzag: 0, -1, 1, -2, ... become 0, 1, 2, 3, ...).
pub(crate) fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// The signed number [`zigzag`] made `value` from.
pub(crate) fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_back_as_written_and_damage_is_named() {
        for value in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut bytes = Vec::new();
            push_varint(&mut bytes, value);
            bytes.push(0xAA);
            let mut input = bytes.as_slice();
            assert_eq!(read_varint(&mut input), Ok(value));
            assert_eq!(input, [0xAA], "the reader stops right after the number");
        }
        assert_eq!(read_varint(&mut &[0x80, 0x80][..]), Err(VarintError::Truncated));
        assert_eq!(read_varint(&mut &[][..]), Err(VarintError::Truncated));
        assert_eq!(read_varint(&mut &[0xFF; 11][..]), Err(VarintError::TooLong));
        for value in [0, -1, 1, i64::MIN, i64::MAX, 1_764_720_000_000, -1_764_720_000_000] {
            assert_eq!(unzigzag(zigzag(value)), value);
        }
        assert!(zigzag(-1) < 128 && zigzag(1) < 128, "small numbers stay one byte either way");
    }
}
