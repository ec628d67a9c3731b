//! The redb engine: a pure-Rust embedded database with ACID transactions. Each group the writer
//! applies is one write transaction committed with `Durability::Immediate` (redb's default
//! one-phase commit: checksummed commit slot, then one `fsync`), so by the time `apply` returns the
//! group is durable and `flush` has nothing left to do. Reads open their own read transaction and
//! see the last committed group.

use std::path::Path;

use redb::{ReadableDatabase, TableDefinition};

use super::{Batch, Kv, StoreError, Visitor};

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ferry");
/// redb's page cache (its default is 1 GiB); a tenant is small.
const CACHE_BYTES: usize = 16 * 1024 * 1024;
pub const FILE_NAME: &str = "ferry.redb";

pub struct RedbKv {
    db: redb::Database,
}

fn engine(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Engine(Box::new(e))
}

impl RedbKv {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(engine)?;
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(FILE_NAME))
            .map_err(engine)?;
        // Reads of a table never written fail; create it once.
        let txn = db.begin_write().map_err(engine)?;
        txn.open_table(DATA).map_err(engine)?;
        txn.commit().map_err(engine)?;
        Ok(Self { db })
    }
}

impl Kv for RedbKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(DATA).map_err(engine)?;
        Ok(table.get(key).map_err(engine)?.map(|v| v.value().to_vec()))
    }

    fn scan(&self, from: &[u8], to: &[u8], visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(DATA).map_err(engine)?;
        for item in table.range(from..to).map_err(engine)? {
            let (k, v) = item.map_err(engine)?;
            if visit(k.value(), v.value()).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(engine)?;
        {
            let mut table = txn.open_table(DATA).map_err(engine)?;
            for (k, v) in &batch.ops {
                match v {
                    Some(v) => {
                        table.insert(k.as_slice(), v.as_slice()).map_err(engine)?;
                    }
                    None => {
                        table.remove(k.as_slice()).map_err(engine)?;
                    }
                }
            }
        }
        txn.commit().map_err(engine)
    }

    fn flush(&self) -> Result<(), StoreError> {
        // `apply` committed with Durability::Immediate.
        Ok(())
    }
}
