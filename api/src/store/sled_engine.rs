//! The sled 0.34.7 engine. Shaped by what is known of sled (see ARCHITECTURE.md): one tree,
//! prefixed big-endian keys, atomic `apply_batch`, no multi-tree transactions, and the blocking
//! `flush()` called only from the writer thread (never `flush_async`).

use std::path::Path;

use super::{Batch, Kv, StoreError, Visitor};

/// sled's page cache; it does not bound memory (rust-stack.md §1.5), but a small one keeps an
/// idle tenant small.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

pub struct SledKv {
    db: sled::Db,
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(Box::new(e))
}

impl SledKv {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(engine)?;
        Ok(Self { db })
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        for item in self.db.range(from..to) {
            let (k, v) = item.map_err(engine)?;
            if visit(&k, &v).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.db.apply_batch(b).map_err(engine)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(engine)
    }
}
