//! Typed ids: chunk and content ids (BLAKE3), sync log sequence numbers and version numbers.

use std::fmt;

/// Why bytes from the wire are not a valid id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("an id must be 32 bytes, got {0}")]
    BadLength(usize),
    #[error("an id must be 64 hex characters: {0}")]
    BadHex(String),
}

macro_rules! hash_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Validates bytes received on the wire.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
                let arr: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| IdError::BadLength(bytes.len()))?;
                Ok(Self(arr))
            }

            pub fn from_hex(s: &str) -> Result<Self, IdError> {
                let v = hex::decode(s).map_err(|_| IdError::BadHex(s.to_owned()))?;
                Self::from_slice(&v).map_err(|_| IdError::BadHex(s.to_owned()))
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            pub fn to_vec(&self) -> Vec<u8> {
                self.0.to_vec()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..16])
            }
        }
    };
}

hash_id!(
    ChunkId,
    "The BLAKE3 hash of a chunk's bytes: its name in storage."
);
hash_id!(
    ContentId,
    "The BLAKE3 hash of a file version's manifest: equal content, equal id."
);

impl ChunkId {
    /// The id of these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3_hash(bytes).as_bytes())
    }

    /// True when `bytes` are this chunk's bytes.
    pub fn verify(&self, bytes: &[u8]) -> bool {
        Self::of(bytes) == *self
    }

    /// True when `parts`, one after the other, are this chunk's bytes (a chunk that arrived
    /// in several network frames, hashed where they lie).
    pub fn verify_parts(&self, parts: &[&[u8]]) -> bool {
        if let [one] = parts {
            return self.verify(one);
        }
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(p);
        }
        *h.finalize().as_bytes() == self.0
    }
}

fn blake3_hash(bytes: &[u8]) -> blake3::Hash {
    blake3::hash(bytes)
}

/// The content id of a manifest: BLAKE3 over each chunk's 32-byte id followed by its length as a
/// little-endian u64. The empty file's manifest is empty.
pub fn content_id_of<'a>(manifest: impl IntoIterator<Item = (&'a ChunkId, u64)>) -> ContentId {
    let mut h = blake3::Hasher::new();
    for (id, len) in manifest {
        h.update(id.as_bytes());
        h.update(&len.to_le_bytes());
    }
    ContentId(*h.finalize().as_bytes())
}

/// A sync log sequence number. A device's cursor is the last one it applied.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Seq(pub u64);

/// A path's version number; 0 means "no version seen".
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Version(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_id_round_trips_through_hex_and_rejects_short_input() {
        let id = ChunkId::of(b"hello");
        assert_eq!(ChunkId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(ChunkId::from_slice(&[0u8; 31]), Err(IdError::BadLength(31)));
        assert!(ChunkId::from_hex("zz").is_err());
    }

    #[test]
    fn verify_detects_a_flipped_byte() {
        let id = ChunkId::of(b"hello world");
        assert!(id.verify(b"hello world"));
        assert!(!id.verify(b"hello worle"));
    }

    #[test]
    fn verify_parts_hashes_the_parts_as_one() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let id = ChunkId::of(&data);
        for cuts in [vec![], vec![1], vec![1024, 1025], vec![3, 4096, 17_000]] {
            let mut parts = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                parts.push(&data[from..c]);
                from = c;
            }
            assert!(id.verify_parts(&parts));
            assert!(!ChunkId::of(b"other").verify_parts(&parts));
        }
        assert!(!id.verify_parts(&[&data[..100], &data[101..]]));
    }

    #[test]
    fn content_id_depends_on_order_and_lengths() {
        let a = ChunkId::of(b"a");
        let b = ChunkId::of(b"b");
        let ab = content_id_of([(&a, 1), (&b, 1)]);
        assert_ne!(ab, content_id_of([(&b, 1), (&a, 1)]));
        assert_ne!(ab, content_id_of([(&a, 1), (&b, 2)]));
        assert_eq!(ab, content_id_of([(&a, 1), (&b, 1)]));
    }
}
