//! How values are laid out as bytes. Every stored value starts with a layout byte, so a later
//! layout can be told apart and migrated.

use serde::{de::DeserializeOwned, Serialize};

use crate::{Result, StorageError};

/// The first byte of a plain JSON value, and the store's schema version.
pub(crate) const SCHEMA_VERSION: u8 = 1;
/// The first byte of a value that is LZ4-compressed JSON (the same layout as [`SCHEMA_VERSION`]).
/// Cases and audit records are several kilobytes of repetitive JSON; sled rewrites whole tree
/// nodes (up to 16 values) as they change, so their size drives its disk traffic and space.
const COMPRESSED_JSON: u8 = 2;
/// Values smaller than this are kept as plain JSON: compressing them gains little.
const COMPRESS_FROM_BYTES: usize = 512;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain data types into a Vec cannot fail.
    encode_json(&serde_json::to_vec(value).expect("stored types serialize to JSON"))
}

/// Lays out a value its owner already serialized to JSON (a large one need not be built as a
/// `serde_json::Value` first).
pub(crate) fn encode_json(json: &[u8]) -> Vec<u8> {
    if json.len() < COMPRESS_FROM_BYTES {
        let mut bytes = Vec::with_capacity(json.len() + 1);
        bytes.push(SCHEMA_VERSION);
        bytes.extend_from_slice(json);
        return bytes;
    }
    let mut bytes = vec![COMPRESSED_JSON];
    bytes.extend_from_slice(&lz4_flex::compress_prepend_size(json));
    bytes
}

/// The JSON a stored value holds, undecoded (for values their owner parses itself).
pub(crate) fn decode_json(bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    let corrupt = |reason: String| StorageError::Corrupt { key: what.to_string(), reason };
    match bytes.split_first() {
        Some((&SCHEMA_VERSION, body)) => Ok(body.to_vec()),
        Some((&COMPRESSED_JSON, body)) => {
            lz4_flex::decompress_size_prepended(body).map_err(|error| corrupt(error.to_string()))
        }
        Some((version, _)) => Err(corrupt(format!("schema version {version} is not {SCHEMA_VERSION}"))),
        None => Err(corrupt("empty value".to_string())),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let corrupt = |reason: String| StorageError::Corrupt { key: what.to_string(), reason };
    match bytes.split_first() {
        Some((&SCHEMA_VERSION, body)) => serde_json::from_slice(body).map_err(|error| corrupt(error.to_string())),
        Some((&COMPRESSED_JSON, body)) => {
            let json = lz4_flex::decompress_size_prepended(body).map_err(|error| corrupt(error.to_string()))?;
            serde_json::from_slice(&json).map_err(|error| corrupt(error.to_string()))
        }
        Some((version, _)) => Err(corrupt(format!("schema version {version} is not {SCHEMA_VERSION}"))),
        None => Err(corrupt("empty value".to_string())),
    }
}
