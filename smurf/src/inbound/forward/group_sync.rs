//! Group commit for the forwarding service: the files of many messages are synced together,
//! on several threads at once, so the file system folds their syncs into few journal commits
//! instead of one commit per sync, one after another. Every caller acts on a file only after
//! its own sync succeeded.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Most threads syncing at once.
const THREADS: usize = 8;

/// Appends `line` to the file at `path` (created if missing) without syncing it: hand the
/// file to [`sync_all`] before acting on the line.
pub fn append(path: &Path, line: &str) -> io::Result<File> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(line.as_bytes())?;
    Ok(file)
}

/// Syncs every file (data and metadata), on up to [`THREADS`] threads at once; one result per
/// file, in order.
pub fn sync_all(files: &[File]) -> Vec<io::Result<()>> {
    if files.len() <= 1 {
        return files.iter().map(File::sync_all).collect();
    }
    let per_thread = files.len().div_ceil(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().map(File::sync_all).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .zip(files.chunks(per_thread))
            .flat_map(|(handle, chunk)| {
                handle.join().unwrap_or_else(|_| {
                    chunk
                        .iter()
                        .map(|_| Err(io::Error::other("sync thread panicked")))
                        .collect()
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_syncs_many_files() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<File> = (0..20)
            .map(|i| append(&dir.path().join(format!("f{i}")), "done 0\n").unwrap())
            .collect();
        let results = sync_all(&files);
        assert_eq!(results.len(), 20);
        assert!(results.iter().all(Result::is_ok));
        for i in 0..20 {
            let text = std::fs::read_to_string(dir.path().join(format!("f{i}"))).unwrap();
            assert_eq!(text, "done 0\n");
        }
        append(&dir.path().join("f3"), "notices\n").unwrap();
        let text = std::fs::read_to_string(dir.path().join("f3")).unwrap();
        assert_eq!(text, "done 0\nnotices\n");
    }
}
