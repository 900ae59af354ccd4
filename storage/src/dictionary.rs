//! Values compressed against a dictionary of earlier values of their kind.
//!
//! Most of what one record holds is said again by the next record of its kind: a case carries
//! the playbook's scenario titles, the wording of its evidence and hints, the names of its JSON
//! fields; an audit record its kind, its fields and its shape. LZ4 alone finds repeats within one
//! value only (a new case: 5.8 KB of JSON, 2.6 KB compressed); given an earlier case as a
//! dictionary it finds them across cases too (about 0.4 KB). Smaller values are fewer bytes for
//! sled to append, flush and rewrite with their tree nodes, which is what a new case and a
//! history of a year cost.
//!
//! Each family of keys (the key's first byte: `c` cases, `a` audit records, `j` summaries, ...)
//! has its own dictionaries, in generations. The first sizable value written in a family becomes
//! its first generation; a later value the newest generation does little for (it compresses
//! less than a quarter better than LZ4 alone) makes the next one, which holds the previous
//! dictionary and that value. A dictionary is stored under `m/dictionary/<family><generation>`
//! in the same change as the first value compressed with it, and never changes: every value
//! names the one it needs, so values written under any generation stay readable, a copy of the
//! store carries its dictionaries along, and a replica meeting a dictionary another replica made
//! reads it from the store.
//!
//! Values are written as plain JSON while a change is built (its own reads see them as such)
//! and compressed once, as the change is written; reads hand plain JSON on to the codec.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sled::IVec;

use crate::codec::{compress_alone, SCHEMA_VERSION};
use crate::engine::{Engine, TransactionSource, Writes};
use crate::{hex_packing, keys, Result, StorageError};

/// The first byte of a value compressed with a dictionary; then the family, the dictionary's
/// generation, the JSON's length (4 bytes, little-endian) and the LZ4 block.
pub(crate) const DICTIONARY_LZ4: u8 = 4;
/// The same, for JSON whose SHA-256 hashes were packed as bytes before it was compressed (the
/// length is the packed length): see `hex_packing`.
pub(crate) const DICTIONARY_LZ4_PACKED_HASHES: u8 = 5;
/// Bytes before the LZ4 block: layout, family, generation, length.
const HEADER: usize = 7;
/// JSON shorter than this is kept as it is: a few bytes saved would not pay for the work. From
/// this size on (a movement's open case, a case's latest activity: about 50 bytes, half of them
/// saved), a value is compressed with its family's dictionary, and may become one.
const SMALLEST_COMPRESSED: usize = 32;
/// A dictionary keeps at most this many bytes, its newest: LZ4 looks back 64 KB, and compressing
/// with a dictionary first indexes all of it.
const LARGEST_DICTIONARY: usize = 16 * 1024;
/// Generations a family may have: a family whose values share little stops learning here.
const MOST_GENERATIONS: u8 = 16;

/// One dictionary: its family (a key's first byte) and generation (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DictionaryId {
    family: u8,
    generation: u8,
}

impl DictionaryId {
    fn key(self) -> Vec<u8> {
        keys::dictionary(self.family, self.generation)
    }

    fn describe(self) -> String {
        format!("dictionary {}{}", char::from(self.family), self.generation)
    }
}

/// Whether values under keys of this family are compressed with dictionaries: not the store's
/// own counters and heads (`m`), nor directory snapshots (`y`, compressed as they are streamed).
fn has_dictionaries(family: u8) -> bool {
    family != b'm' && family != b'y'
}

/// The dictionaries a store has, as far as this process has seen them.
pub(crate) struct Dictionaries {
    /// Where a dictionary this process has not seen yet is read from (one another replica made).
    engine: Engine,
    known: RwLock<Known>,
}

#[derive(Default)]
struct Known {
    content: HashMap<DictionaryId, Arc<[u8]>>,
    /// Each family's newest generation.
    newest: HashMap<u8, u8>,
}

impl Known {
    fn insert(&mut self, id: DictionaryId, content: Arc<[u8]>) {
        let newest = self.newest.entry(id.family).or_insert(id.generation);
        *newest = (*newest).max(id.generation);
        self.content.insert(id, content);
    }
}

/// Dictionaries a change made, to be known once it is written. (One it met in the store is
/// known at once: it was committed, by whichever replica made it.)
pub(crate) struct Learned(Vec<(DictionaryId, Arc<[u8]>)>);

impl Dictionaries {
    pub(crate) fn new(engine: Engine) -> Dictionaries {
        Dictionaries { engine, known: RwLock::new(Known::default()) }
    }

    /// The value as the codec reads it: plain JSON for one compressed with a dictionary, any
    /// other value as it is. `source` reads a dictionary not seen yet inside a transaction (else
    /// the engine is asked).
    pub(crate) fn expand(&self, value: IVec, source: Option<&dyn TransactionSource>) -> Result<IVec> {
        let packed_hashes = match value.first() {
            Some(&DICTIONARY_LZ4) => false,
            Some(&DICTIONARY_LZ4_PACKED_HASHES) => true,
            _ => return Ok(value),
        };
        let corrupt =
            |reason: String| StorageError::Corrupt { key: "a dictionary-compressed value".to_string(), reason };
        if value.len() < HEADER {
            return Err(corrupt("shorter than its header".to_string()));
        }
        let id = DictionaryId { family: value[1], generation: value[2] };
        let length = u32::from_le_bytes([value[3], value[4], value[5], value[6]]) as usize;
        // No LZ4 block expands more than 255-fold: a length beyond that is damage, not a value
        // to allocate for.
        if length > (value.len() - HEADER).saturating_mul(255) {
            return Err(corrupt(format!("its header claims {length} bytes from {} compressed", value.len() - HEADER)));
        }
        let dictionary = self
            .dictionary(id, source)?
            .ok_or_else(|| corrupt(format!("it names {}, which the store does not hold", id.describe())))?;
        let mut expanded = vec![0_u8; length + 1];
        expanded[0] = SCHEMA_VERSION;
        let written = lz4_flex::block::decompress_into_with_dict(&value[HEADER..], &mut expanded[1..], &dictionary)
            .map_err(|error| corrupt(error.to_string()))?;
        if written != length {
            return Err(corrupt(format!("{written} bytes where its header says {length}")));
        }
        if packed_hashes {
            let mut json = vec![SCHEMA_VERSION];
            hex_packing::unpack_into(&expanded[1..], &mut json).map_err(corrupt)?;
            return Ok(IVec::from(json));
        }
        Ok(IVec::from(expanded))
    }

    fn dictionary(&self, id: DictionaryId, source: Option<&dyn TransactionSource>) -> Result<Option<Arc<[u8]>>> {
        if let Some(content) = self.read_known().content.get(&id) {
            return Ok(Some(Arc::clone(content)));
        }
        let stored = match source {
            Some(source) => source.get(&id.key())?,
            None => self.engine.get(id.key())?,
        };
        // A stored dictionary never changes, so it is kept once read.
        Ok(stored.map(|stored| {
            let content = dictionary_content(&stored);
            self.known.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(id, Arc::clone(&content));
            content
        }))
    }

    fn read_known(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Compresses a change's plain JSON values as they are stored, adding the dictionaries it
    /// makes to its writes. What it returns becomes known with [`Dictionaries::learn`] once the
    /// change is written, not before: a change that fails leaves no dictionary behind.
    pub(crate) fn compact(&self, writes: &mut Writes, source: &dyn TransactionSource) -> Result<Learned> {
        let mut learned = Learned(Vec::new());
        for (key, value) in writes.iter_mut() {
            let Some(stored) = value else { continue };
            let Some((&SCHEMA_VERSION, json)) = stored.split_first() else { continue };
            let family = key.first().copied().filter(|family| has_dictionaries(*family));
            let compacted = match family {
                Some(family) if json.len() >= SMALLEST_COMPRESSED => {
                    self.compress(family, json, source, &mut learned)?
                }
                _ => match compress_alone(json) {
                    Some(compressed) => compressed,
                    None => continue,
                },
            };
            *value = Some(compacted.into());
        }
        // The dictionaries made go with the first values compressed with them.
        for (id, content) in &learned.0 {
            let key = id.key();
            let at = writes.partition_point(|(written, _)| written < &key);
            writes.insert(at, (key, Some(plain(content).into())));
        }
        Ok(learned)
    }

    /// Makes what a written change learned known to the changes after it.
    pub(crate) fn learn(&self, learned: Learned) {
        if learned.0.is_empty() {
            return;
        }
        let mut known = self.known.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (id, content) in learned.0 {
            known.insert(id, content);
        }
    }

    fn compress(
        &self,
        family: u8,
        json: &[u8],
        source: &dyn TransactionSource,
        learned: &mut Learned,
    ) -> Result<Vec<u8>> {
        // What is compressed: the JSON with its hashes packed, if it has any. Dictionaries are
        // made of plain JSON all the same (a stored dictionary stays readable text).
        let packed = hex_packing::pack(json);
        let body = Body {
            layout: if packed.is_some() { DICTIONARY_LZ4_PACKED_HASHES } else { DICTIONARY_LZ4 },
            bytes: packed.as_deref().unwrap_or(json),
        };
        let Some((id, dictionary)) = self.newest(family, learned) else {
            // The family's first dictionary, unless another replica made it first.
            let first = DictionaryId { family, generation: 1 };
            let (id, dictionary) = self.next_generation(first, &[], json, source, learned)?;
            return Ok(compressed_with(id, &dictionary, &body));
        };
        let compressed = compressed_with(id, &dictionary, &body);
        if id.generation >= MOST_GENERATIONS || helps(&compressed, body.bytes) {
            return Ok(compressed);
        }
        let next = DictionaryId { family, generation: id.generation + 1 };
        let (next, dictionary) = self.next_generation(next, &dictionary, json, source, learned)?;
        Ok(compressed_with(next, &dictionary, &body))
    }

    /// The family's newest dictionary, counting those this change made.
    fn newest(&self, family: u8, learned: &Learned) -> Option<(DictionaryId, Arc<[u8]>)> {
        let in_change = learned.0.iter().filter(|(id, _)| id.family == family).max_by_key(|(id, _)| id.generation);
        if let Some((id, content)) = in_change {
            return Some((*id, Arc::clone(content)));
        }
        let known = self.read_known();
        let generation = *known.newest.get(&family)?;
        let id = DictionaryId { family, generation };
        known.content.get(&id).map(|content| (id, Arc::clone(content)))
    }

    /// Generation `id`: the one in the store if another replica made it first (a dictionary is
    /// never replaced), else `previous` and `json`, made by this change (and written with it).
    fn next_generation(
        &self,
        id: DictionaryId,
        previous: &[u8],
        json: &[u8],
        source: &dyn TransactionSource,
        learned: &mut Learned,
    ) -> Result<(DictionaryId, Arc<[u8]>)> {
        if let Some(existing) = self.dictionary(id, Some(source))? {
            return Ok((id, existing));
        }
        let mut content = Vec::with_capacity(previous.len() + json.len());
        content.extend_from_slice(previous);
        content.extend_from_slice(json);
        let content: Arc<[u8]> = content[content.len().saturating_sub(LARGEST_DICTIONARY)..].into();
        learned.0.push((id, Arc::clone(&content)));
        Ok((id, content))
    }
}

/// A stored dictionary's bytes (stored as plain JSON, behind the layout byte).
fn dictionary_content(stored: &[u8]) -> Arc<[u8]> {
    stored.get(1..).unwrap_or_default().into()
}

fn plain(json: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(json.len() + 1);
    bytes.push(SCHEMA_VERSION);
    bytes.extend_from_slice(json);
    bytes
}

/// What a value compresses: its JSON, or its JSON with hashes packed, and the layout saying which.
struct Body<'a> {
    layout: u8,
    bytes: &'a [u8],
}

fn compressed_with(id: DictionaryId, dictionary: &[u8], body: &Body<'_>) -> Vec<u8> {
    let mut bytes = vec![body.layout, id.family, id.generation];
    bytes.extend_from_slice(&(body.bytes.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&lz4_flex::block::compress_with_dict(body.bytes, dictionary));
    bytes
}

/// JSON shorter than this is weighed against itself, not against LZ4 alone: LZ4 finds little to
/// shrink in it, and compressing it a second time to find out cost about as much as compressing
/// it (a new case has half a dozen such values: its summary, its movement's entries, ...).
const WEIGHED_AGAINST_LZ4_FROM: usize = 256;

/// Whether the dictionary did its part for `json`: a quarter smaller than LZ4 alone (or than the
/// JSON itself, when it is short) makes it, and a value it shrank fourfold needs no second look.
fn helps(compressed: &[u8], json: &[u8]) -> bool {
    let size = compressed.len() - HEADER;
    if size * 4 <= json.len() {
        return true;
    }
    let without = match json.len() < WEIGHED_AGAINST_LZ4_FROM {
        true => json.len(),
        false => lz4_flex::block::compress(json).len(),
    };
    size * 4 <= without * 3
}

/// A change's reads, with values compressed with a dictionary handed on as plain JSON.
pub(crate) struct Expanding<'a> {
    pub(crate) source: &'a dyn TransactionSource,
    pub(crate) dictionaries: &'a Dictionaries,
}

impl TransactionSource for Expanding<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<IVec>> {
        match self.source.get(key)? {
            Some(value) => self.dictionaries.expand(value, Some(self.source)).map(Some),
            None => Ok(None),
        }
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<IVec>> {
        self.source.keys_with_prefix(prefix)
    }

    fn last_key_between(&self, low: &[u8], high: &[u8]) -> Result<Option<IVec>> {
        self.source.last_key_between(low, high)
    }
}
