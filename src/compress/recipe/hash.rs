//! Hashes recipes name things by: XXH64 (`xxh64:` + 16 hex digits) of bytes, of token
//! windows, of canonical JSON, and of a model directory (its config and its tensors).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

/// XXH64 with seed 0, streaming (the reference algorithm; `xxhsum -H1` prints the same).
#[derive(Clone)]
pub struct Xxh64 {
    v: [u64; 4],
    buf: [u8; 32],
    len: usize,
    total: u64,
}

impl Default for Xxh64 {
    fn default() -> Self {
        Self {
            v: [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)],
            buf: [0; 32],
            len: 0,
            total: 0,
        }
    }
}

fn round(acc: u64, x: u64) -> u64 {
    acc.wrapping_add(x.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl Xxh64 {
    pub fn update(&mut self, mut data: &[u8]) -> &mut Self {
        self.total += data.len() as u64;
        if self.len > 0 {
            let take = (32 - self.len).min(data.len());
            self.buf[self.len..self.len + take].copy_from_slice(&data[..take]);
            self.len += take;
            data = &data[take..];
            if self.len < 32 {
                return self;
            }
            let b = self.buf;
            self.stripe(&b);
            self.len = 0;
        }
        let mut chunks = data.chunks_exact(32);
        for c in &mut chunks {
            self.stripe(c);
        }
        let rest = chunks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.len = rest.len();
        self
    }

    fn stripe(&mut self, c: &[u8]) {
        for (i, v) in self.v.iter_mut().enumerate() {
            *v = round(*v, le64(&c[8 * i..]));
        }
    }

    pub fn digest(&self) -> u64 {
        let [a, b, c, d] = self.v;
        let mut h = if self.total >= 32 {
            let h = a
                .rotate_left(1)
                .wrapping_add(b.rotate_left(7))
                .wrapping_add(c.rotate_left(12))
                .wrapping_add(d.rotate_left(18));
            [a, b, c, d].into_iter().fold(h, |h, v| {
                (h ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
            })
        } else {
            P5
        };
        h = h.wrapping_add(self.total);
        let mut rest = &self.buf[..self.len];
        while rest.len() >= 8 {
            h = (h ^ round(0, le64(rest)))
                .rotate_left(27)
                .wrapping_mul(P1)
                .wrapping_add(P4);
            rest = &rest[8..];
        }
        if rest.len() >= 4 {
            let k = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
            h = (h ^ k.wrapping_mul(P1))
                .rotate_left(23)
                .wrapping_mul(P2)
                .wrapping_add(P3);
            rest = &rest[4..];
        }
        for &x in rest {
            h = (h ^ (x as u64).wrapping_mul(P5))
                .rotate_left(11)
                .wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }

    /// `xxh64:` and the digest in hex.
    pub fn hex(&self) -> String {
        format!("xxh64:{:016x}", self.digest())
    }
}

/// The hash of `bytes` as recipes write it.
pub fn hash_bytes(bytes: &[u8]) -> String {
    Xxh64::default().update(bytes).hex()
}

/// The hash of token windows (each one's length, then its ids, little-endian).
pub fn hash_tokens(samples: &[Vec<u32>]) -> String {
    let mut h = Xxh64::default();
    for s in samples {
        let bytes: Vec<u8> = s.iter().flat_map(|t| t.to_le_bytes()).collect();
        h.update(&(s.len() as u64).to_le_bytes()).update(&bytes);
    }
    h.hex()
}

/// JSON with every object's keys sorted, without spaces: the same value always reads the same.
pub(super) fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            x => x.clone(),
        }
    }
    sorted(v).to_string()
}

/// The hash of a JSON value in canonical form (keys sorted, no spaces): equal values hash alike
/// whatever their key order.
pub fn hash_json(v: &Value) -> String {
    hash_bytes(canonical(v).as_bytes())
}

/// A model directory's identity: hashes of its config and of its tensors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelId {
    pub config_hash: String,
    pub weights_hash: String,
}

impl ModelId {
    pub fn of(dir: &Path) -> Result<Self> {
        let ck = Checkpoint::open(dir)?;
        let mut h = Xxh64::default();
        for name in ck.names() {
            let i = ck.info(name)?;
            let head = format!("{name}\0{:?}\0{:?}\0", i.dtype, i.shape);
            h.update(&(head.len() as u64).to_le_bytes())
                .update(head.as_bytes())
                .update(ck.bytes(name)?);
        }
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
        Ok(Self {
            config_hash: hash_bytes(canonical(&v).as_bytes()),
            weights_hash: h.hex(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Xxh64;

    /// XXH64 against the reference implementation's digests (xxhash-rust 0.8, seed 0) of the
    /// bytes `(i·31 + 7) mod 256`, across the tail and stripe boundaries, whole and streamed.
    #[test]
    fn xxh64_matches_the_reference() {
        for (n, want) in [
            (0usize, 0xef46db3751d8e999u64),
            (1, 0xa96c7f0ce858bbb7),
            (3, 0x56e6957632a487f9),
            (4, 0xc60d15b1e3ff8f04),
            (7, 0xafbefc3d6c6f9a8e),
            (8, 0x3da5c7aa269683e0),
            (31, 0x4a74f3a1a39ad4a1),
            (32, 0x8d57d6a4671cc43d),
            (33, 0x62c9fd21ed857664),
            (63, 0x5c320a0d2707057f),
            (64, 0x7bbabbc45729d17e),
            (100, 0xefa0ad2d3e70c151),
            (1000, 0x99594f4828043d35),
            (4099, 0x98531e44aa4f969d),
        ] {
            let data: Vec<u8> = (0..n).map(|i| (i * 31 + 7) as u8).collect();
            assert_eq!(Xxh64::default().update(&data).digest(), want, "{n} bytes");
            let mut h = Xxh64::default();
            for c in data.chunks(5) {
                h.update(c);
            }
            assert_eq!(h.digest(), want, "{n} bytes in pieces");
        }
        let mut h = Xxh64::default();
        h.update(b"abc").update(&[5u8; 40]).update(b"de");
        assert_eq!(h.digest(), 0xb6eb3c6e039f95a4);
    }
}
