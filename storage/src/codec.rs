//! How values are laid out as bytes. Every stored value starts with a layout byte, so a later
//! layout can be told apart and migrated.

use serde::{de::DeserializeOwned, Serialize};

use crate::{Result, StorageError};

/// The first byte of a plain JSON value, and the store's schema version. (Layout 4, a value
/// compressed with a dictionary, is `dictionary`'s: reads expand it before the codec sees it.)
pub(crate) const SCHEMA_VERSION: u8 = 1;
/// The first byte of a value that is LZ4-compressed JSON (the same layout as [`SCHEMA_VERSION`]).
/// Cases and audit records are several kilobytes of repetitive JSON; sled rewrites whole tree
/// nodes (up to 16 values) as they change, so their size drives its disk traffic and space.
const COMPRESSED_JSON: u8 = 2;
/// Values smaller than this are kept as plain JSON when no dictionary applies: compressing them
/// alone gains little.
const COMPRESS_FROM_BYTES: usize = 512;
/// The first byte of a value written as LZ4 frames of JSON, compressed as it is serialized: a
/// large value (a directory snapshot of hundreds of thousands of entries) is never held whole
/// as JSON, nor compressed from a second whole copy.
const STREAMED_JSON: u8 = 3;

/// A value its owner serialized and compressed (a large one, before taking the writer lock),
/// laid out as the store keeps it.
pub struct EncodedJson(pub(crate) Vec<u8>);

impl EncodedJson {
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<EncodedJson> {
        let encode_error = |reason: String| StorageError::Encode(reason);
        let mut encoder = lz4_flex::frame::FrameEncoder::new(vec![STREAMED_JSON]);
        serde_json::to_writer(&mut encoder, value).map_err(|error| encode_error(error.to_string()))?;
        encoder.finish().map(EncodedJson).map_err(|error| encode_error(error.to_string()))
    }
}

/// A value as a change stages it: plain JSON, which the change's own reads parse as it is. As
/// the change is written, it is compressed (`dictionary`).
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Most values are a few hundred bytes; a case's several kilobytes grow from there.
    let mut bytes = Vec::with_capacity(256);
    bytes.push(SCHEMA_VERSION);
    // Serializing our own plain data types into a Vec cannot fail.
    serde_json::to_writer(&mut bytes, value).expect("stored types serialize to JSON");
    bytes
}

/// `json` LZ4-compressed on its own, when it is large enough to gain from it.
pub(crate) fn compress_alone(json: &[u8]) -> Option<Vec<u8>> {
    if json.len() < COMPRESS_FROM_BYTES {
        return None;
    }
    let mut bytes = vec![COMPRESSED_JSON];
    bytes.extend_from_slice(&lz4_flex::compress_prepend_size(json));
    Some(bytes)
}

/// The JSON a stored value holds, undecoded (for values their owner parses itself).
pub(crate) fn decode_json(bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    let corrupt = |reason: String| StorageError::Corrupt { key: what.to_string(), reason };
    match bytes.split_first() {
        Some((&SCHEMA_VERSION, body)) => Ok(body.to_vec()),
        Some((&COMPRESSED_JSON, body)) => {
            lz4_flex::decompress_size_prepended(body).map_err(|error| corrupt(error.to_string()))
        }
        Some((&STREAMED_JSON, body)) => {
            let mut json = Vec::new();
            std::io::Read::read_to_end(&mut lz4_flex::frame::FrameDecoder::new(body), &mut json)
                .map_err(|error| corrupt(error.to_string()))?;
            Ok(json)
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
