//! The data directory's lock: one process at a time drives runs in a data directory (`qila serve`, `qila run`,
//! `qila bench`), so that when it starts, every lease left in the database belongs to a process that is gone and
//! the orchestrator can claim those steps again at once (`Options::sole_worker`).
//!
//! The lock is an exclusive `flock(2)` on `DATA_DIR/qila.lock`, which holds the owner's process id for the error
//! message of the next process. The kernel releases it when the process exits, however it exits (`kill -9`
//! included), so a stale lock file is never a problem: only a live holder refuses.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "qila.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error(
        "the data directory {dir} is in use by another qila process ({holder}); stop it or use another --data-dir",
        dir = .dir.display(),
        holder = match .pid { Some(pid) => format!("pid {pid}, from the lock file"), None => "its pid is not in the lock file".to_string() }
    )]
    Busy {
        /// The data directory.
        dir: PathBuf,
        /// The holder's pid as written in the lock file.
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {path}: {source}", path = .path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock on a data directory, held until dropped (or the process exits).
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `data_dir` (creating the directory if needed) without waiting, and writes this process's
    /// id into the lock file.
    #[expect(unsafe_code, reason = "flock takes the data directory's lock")]
    pub fn acquire(data_dir: &Path) -> Result<Self, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor we own; it has no memory-safety preconditions.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Busy {
                    dir: data_dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            return Err(io(err));
        }
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.flush()
        };
        write_pid(&mut file).map_err(io)?;
        Ok(Self { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        // Leave the file (removing it would race with a process that opened it and waits to lock it); clear the
        // pid so that nobody is named as the holder. The lock itself goes with the descriptor.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        // flock locks belong to open file descriptions, so a second open in the same process conflicts too.
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        let message = err.to_string();
        assert_eq!(
            message,
            format!(
                "the data directory {} is in use by another qila process (pid {}, from the lock file); stop it or \
                 use another --data-dir",
                dir.path().display(),
                std::process::id()
            )
        );
        drop(first);
        let again = DataDirLock::acquire(dir.path()).unwrap();
        drop(again);
    }

    #[test]
    fn the_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let _lock = DataDirLock::acquire(&nested).unwrap();
        assert!(nested.join(LOCK_FILE).is_file());
    }
}
