//! A run folder has one owner: `flowc train` holds an exclusive OS lock on
//! `RUN/.lock` for the whole run. The OS releases it on any exit, a kill -9
//! included, so a stale lock never blocks a later run. The file holds the
//! owner's PID, for the message a second `train` gets.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::TrainError;

pub const LOCK: &str = ".lock";

/// Held for as long as it lives.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Takes the folder's lock, or says who holds it.
pub fn acquire(dir: &Path) -> Result<RunLock, TrainError> {
    let path = dir.join(LOCK);
    let io = |e: std::io::Error| TrainError::Io(format!("cannot lock {}: {e}", path.display()));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            let owner = match owner.trim() {
                "" => "another process".to_string(),
                pid => format!("another flowc train (PID {pid})"),
            };
            return Err(TrainError::Usage(format!(
                "{} is in use by {owner}; wait for it to finish, or choose another --out",
                dir.display()
            )));
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(RunLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_owner_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        let err = acquire(dir.path()).unwrap_err();
        let pid = std::process::id().to_string();
        assert!(
            matches!(&err, TrainError::Usage(m) if m.contains(&pid)),
            "{err}"
        );
        drop(first);
        acquire(dir.path()).unwrap();
    }
}
