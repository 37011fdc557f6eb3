//! Paths, JSON, and a small GGUF writer for building malformed files byte by byte.

use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    frugal_testdata::workspace_root()
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures/formats/gguf").join(name)
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

pub use frugal_testdata::reference_dir;

/// Builds GGUF bytes field by field, so tests can write what no correct writer would.
pub struct Builder {
    pub version: u32,
    pub alignment: usize,
    kvs: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    pub data: Vec<u8>,
}

pub fn gguf_str(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            version: 3,
            alignment: 32,
            kvs: vec![],
            n_kv: 0,
            infos: vec![],
            n_tensors: 0,
            data: vec![],
        }
    }

    /// A key with value type `ty` and raw value bytes.
    pub fn kv(mut self, key: &str, ty: u32, value: &[u8]) -> Builder {
        self.kvs.extend(gguf_str(key.as_bytes()));
        self.kvs.extend(ty.to_le_bytes());
        self.kvs.extend_from_slice(value);
        self.n_kv += 1;
        self
    }

    pub fn kv_u32(self, key: &str, v: u32) -> Builder {
        self.kv(key, 4, &v.to_le_bytes())
    }

    pub fn kv_u16(self, key: &str, v: u16) -> Builder {
        self.kv(key, 2, &v.to_le_bytes())
    }

    pub fn kv_i32(self, key: &str, v: i32) -> Builder {
        self.kv(key, 5, &v.to_le_bytes())
    }

    /// A tensor entry; `data` is appended to the data section at the next aligned offset.
    pub fn tensor(mut self, name: &str, ne: &[u64], ty: u32, data: &[u8]) -> Builder {
        self.data
            .resize(self.data.len().next_multiple_of(self.alignment), 0);
        let offset = self.data.len() as u64;
        self.data.extend_from_slice(data);
        self.tensor_at(name, ne, ty, offset)
    }

    /// A tensor entry with an explicit offset and no data.
    pub fn tensor_at(mut self, name: &str, ne: &[u64], ty: u32, offset: u64) -> Builder {
        self.infos.extend(gguf_str(name.as_bytes()));
        self.infos.extend((ne.len() as u32).to_le_bytes());
        for d in ne {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend_from_slice(&self.kvs);
        out.extend_from_slice(&self.infos);
        out.resize(out.len().next_multiple_of(self.alignment), 0);
        out.extend_from_slice(&self.data);
        out
    }
}
