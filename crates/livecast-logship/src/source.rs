//! The source: the log directory's files that `--include` names and `--exclude` does not,
//! known by their device and inode plus the fingerprint of their first line, read from their
//! checkpoint in whole lines.
//!
//! A file is followed by identity, not by name: once followed (or known from a checkpoint of an
//! earlier run), it is read to its end whatever it is renamed to, so a rotation to a name the
//! globs do not cover loses nothing. Compressed rotations (`.gz`...) are new files, excluded by
//! name: they are never read as text.
//!
//! The device and inode say which physical file an entry is: a file whose inode, size and
//! modification time are unchanged since the last scan keeps its fingerprint without being
//! opened again. A new inode, or a known one that changed (grew, was truncated, rewritten),
//! has its first line read again. The fingerprint says which content it holds, and checkpoints
//! and document ids belong to it: rename rotation changes the name (inode and content stay, so
//! the checkpoint follows); copytruncate makes a copy with a new inode but the same first line
//! (so the copy resumes where the original stopped) and empties the original (same inode, new
//! first line: a new fingerprint, read from 0). A reused inode number brings a new first line
//! too; first lines carry a millisecond timestamp and a session.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest first line used for the fingerprint.
const FINGERPRINT_BYTES: usize = 1024;
/// Longest line accepted; longer ones are dead-lettered in pieces rather than held forever.
pub(crate) const MAX_LINE: usize = 1024 * 1024;

/// One complete line read from a file.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub file: u64,
    pub offset: u64,
    pub end: u64,
    pub bytes: Vec<u8>,
}

impl Line {
    /// The document id: the same line always gets the same id.
    pub fn id(&self) -> String {
        format!("{:016x}-{}", self.file, self.offset)
    }
}

#[derive(Debug)]
struct Followed {
    /// Where the file is now (it may have been renamed since it was found).
    path: PathBuf,
    /// Its size at the last scan; reading stops there.
    size: u64,
}

/// Device and inode.
type FileId = (u64, u64);

/// What the last scan saw of a physical file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// The fingerprint of its first line.
    fingerprint: u64,
    /// Size and modification time then: the first line is read again only when they change.
    size: u64,
    modified: Option<std::time::SystemTime>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoints {
    /// Fingerprint (hex) → offset of the first byte not yet acknowledged.
    offsets: HashMap<String, u64>,
}

/// Which file names are shipped: `*` and `?` wildcards over the whole name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Names {
    fn included(&self, name: &str) -> bool {
        !name.starts_with('.') && self.include.iter().any(|g| glob(g, name))
    }

    fn excluded(&self, name: &str) -> bool {
        self.exclude.iter().any(|g| glob(g, name))
    }
}

/// Whether `name` matches `pattern` (`*`: any run of characters, `?`: one character).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Greedy matching with a retry point at the last star: linear for these short names.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Source {
    /// The log directory (`--log-dir`).
    dir: PathBuf,
    /// Which of its files are shipped.
    names: Names,
    /// The checkpoint file in the state directory.
    checkpoint_path: PathBuf,
    /// Held for the life of the source: one shipper per state directory.
    _lock: std::fs::File,
    /// Acknowledged offsets, as persisted.
    offsets: HashMap<u64, u64>,
    /// Where reading goes on: beyond `offsets` while batches are in flight.
    read_to: HashMap<u64, u64>,
    /// Followed files by fingerprint.
    files: HashMap<u64, Followed>,
    /// Fingerprints by device and inode, from the last scan.
    seen: HashMap<FileId, Seen>,
    /// Followed files the last scan did not find (kept for one more scan).
    missing: HashSet<u64>,
    /// First lines read so far (files new or changed since the scan before).
    pub fingerprints_read: u64,
}

impl Source {
    /// Loads the checkpoints of an earlier run.
    pub fn open(dir: PathBuf, names: Names, state_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        // Two shippers on one state directory would overwrite each other's checkpoints.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(state_dir.join(".lock"))?;
        if let Err(error) = lock.try_lock() {
            return Err(std::io::Error::other(format!(
                "another livecast-logship uses {} ({error})",
                state_dir.display()
            )));
        }
        let checkpoint_path = state_dir.join("checkpoints.json");
        let saved: Checkpoints = match std::fs::read(&checkpoint_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoints::default(),
            Err(e) => return Err(e),
        };
        let offsets = saved
            .offsets
            .into_iter()
            .filter_map(|(k, v)| u64::from_str_radix(&k, 16).ok().map(|k| (k, v)))
            .collect();
        Ok(Self {
            dir,
            names,
            checkpoint_path,
            _lock: lock,
            read_to: HashMap::new(),
            offsets,
            files: HashMap::new(),
            seen: HashMap::new(),
            missing: HashSet::new(),
            fingerprints_read: 0,
        })
    }

    /// Re-lists the directory: new files, rotated names, truncations. Returns the bytes of
    /// files that disappeared before they were fully shipped (deleted by someone else):
    /// those lines are lost, and the caller says so.
    pub fn scan(&mut self) -> std::io::Result<u64> {
        use std::os::unix::fs::MetadataExt as _;
        let mut found = HashMap::new();
        let mut seen = HashMap::new();
        // A file renamed between the listing and its look-up is under neither name in this
        // scan (see below).
        let mut raced = false;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.files.clear();
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let included = self.names.included(name) && !self.names.excluded(name);
            let path = entry.path();
            let Ok(meta) = entry.metadata() else {
                // Renamed or removed since the listing: this scan cannot tell which.
                raced = true;
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let id = (meta.dev(), meta.ino());
            // Under another name, only a file followed already (by inode) is read on; one
            // that is neither excluded nor known yet is looked at for a checkpoint of its own.
            let known = self
                .seen
                .get(&id)
                .is_some_and(|s| self.files.contains_key(&s.fingerprint));
            if !included && !known && self.names.excluded(name) {
                continue;
            }
            let size = meta.len();
            let modified = meta.modified().ok();
            let unchanged = self
                .seen
                .get(&id)
                .filter(|s| s.size == size && s.modified == modified && modified.is_some());
            let fingerprint = match unchanged {
                Some(s) => s.fingerprint,
                None => {
                    self.fingerprints_read += 1;
                    // A file whose first line is still being written has no identity yet.
                    let Some(fingerprint) = fingerprint(&path)? else {
                        raced |= !path.exists();
                        continue;
                    };
                    fingerprint
                }
            };
            seen.insert(
                id,
                Seen {
                    fingerprint,
                    size,
                    modified,
                },
            );
            let resumed =
                self.files.contains_key(&fingerprint) || self.offsets.contains_key(&fingerprint);
            if !included && !known && !resumed {
                continue;
            }
            // Two files with one fingerprint (a copytruncate copy and its original for a moment)
            // hold the same bytes up to the shorter one; follow the longer.
            match found.get(&fingerprint) {
                Some(Followed { size: other, .. }) if *other >= size => {}
                _ => {
                    found.insert(fingerprint, Followed { path, size });
                }
            }
        }
        // A followed file missing from this listing may be in the middle of a rename (a
        // directory listing can show a file renamed meanwhile under neither name): it is kept
        // for one more scan with its checkpoint, and only a file missing twice in a row, in
        // scans that raced nothing, is gone and its unshipped rest lost.
        let mut lost = 0;
        let mut missing = HashSet::new();
        for (fp, followed) in std::mem::take(&mut self.files) {
            if found.contains_key(&fp) {
                continue;
            }
            if raced || !self.missing.contains(&fp) {
                missing.insert(fp);
                found.insert(fp, followed);
            } else {
                lost += followed
                    .size
                    .saturating_sub(self.offsets.get(&fp).copied().unwrap_or(0));
            }
        }
        if !missing.is_empty() {
            // Under its new name the file is then recognised by its inode.
            for (id, was) in self.seen.drain() {
                seen.entry(id).or_insert(was);
            }
        }
        self.missing = missing;
        self.files = found;
        self.seen = seen;
        Ok(lost)
    }

    /// Files followed now.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Bytes in followed files beyond their checkpoints.
    pub fn bytes_behind(&self) -> u64 {
        self.files
            .iter()
            .map(|(fp, f)| {
                f.size
                    .saturating_sub(self.offsets.get(fp).copied().unwrap_or(0))
            })
            .sum()
    }

    /// Reads up to `max_lines` complete lines after those already handed out. Only
    /// [`Source::commit`] moves the checkpoints; [`Source::rewind`] hands the unacknowledged
    /// lines out again.
    pub fn read(&mut self, max_lines: usize) -> std::io::Result<Vec<Line>> {
        let mut lines = Vec::new();
        let mut keys: Vec<&u64> = self.files.keys().collect();
        keys.sort();
        for fp in keys {
            if lines.len() >= max_lines {
                break;
            }
            let file = &self.files[fp];
            let committed = self.offsets.get(fp).copied().unwrap_or(0);
            let start = self.read_to.get(fp).copied().unwrap_or(0).max(committed);
            if start >= file.size {
                continue;
            }
            read_lines(&file.path, *fp, start, max_lines - lines.len(), &mut lines)?;
        }
        for line in &lines {
            let to = self.read_to.entry(line.file).or_insert(0);
            *to = (*to).max(line.end);
        }
        Ok(lines)
    }

    /// Forgets what was handed out but not acknowledged: it is read again.
    pub fn rewind(&mut self) {
        self.read_to.clear();
    }

    /// Followed files whose every line is acknowledged.
    pub fn fully_shipped(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|(fp, f)| self.offsets.get(*fp).copied().unwrap_or(0) >= f.size)
            .map(|(_, f)| f.path.clone())
            .collect()
    }

    /// Moves checkpoints to `ends` ((file, offset) pairs of a batch every sink acknowledged)
    /// and persists them.
    pub fn commit(&mut self, ends: &[(u64, u64)]) -> std::io::Result<()> {
        for (file, end) in ends {
            let offset = self.offsets.entry(*file).or_insert(0);
            *offset = (*offset).max(*end);
        }
        // Forget files that are gone, so the checkpoint file does not grow forever.
        let live = &self.files;
        self.offsets.retain(|fp, _| live.contains_key(fp));
        self.read_to.retain(|fp, _| live.contains_key(fp));
        let saved = Checkpoints {
            offsets: self
                .offsets
                .iter()
                .map(|(k, v)| (format!("{k:016x}"), *v))
                .collect(),
        };
        let tmp = self.checkpoint_path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
        {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            // The checkpoint must be on disk before it is trusted after a crash.
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.checkpoint_path)
    }
}

/// The end offset of the last line per file: what committing a batch means.
pub(crate) fn ends(lines: &[Line]) -> Vec<(u64, u64)> {
    let mut ends: HashMap<u64, u64> = HashMap::new();
    for line in lines {
        let end = ends.entry(line.file).or_insert(0);
        *end = (*end).max(line.end);
    }
    ends.into_iter().collect()
}

fn fingerprint(path: &Path) -> std::io::Result<Option<u64>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; FINGERPRINT_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        let n = f.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let head = &buf[..filled];
    let first = match head.iter().position(|b| *b == b'\n') {
        Some(i) => &head[..i],
        None if filled == FINGERPRINT_BYTES => head,
        None => return Ok(None),
    };
    Ok(Some(fnv1a(first)))
}

fn read_lines(
    path: &Path,
    fp: u64,
    start: u64,
    max: usize,
    out: &mut Vec<Line>,
) -> std::io::Result<()> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(256 * 1024);
    let mut offset = start;
    let mut taken = 0;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut consumed = 0;
        while taken < max {
            let rest = &buf[consumed..];
            let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                if rest.len() >= MAX_LINE {
                    // A runaway line: hand it on (it will be dead-lettered) so the file moves on.
                    out.push(Line {
                        file: fp,
                        offset,
                        end: offset + rest.len() as u64,
                        bytes: rest.to_vec(),
                    });
                    offset += rest.len() as u64;
                    consumed = buf.len();
                    taken += 1;
                }
                break;
            };
            let line = &rest[..nl];
            let end = offset + nl as u64 + 1;
            if !line.is_empty() {
                out.push(Line {
                    file: fp,
                    offset,
                    end,
                    bytes: line.to_vec(),
                });
                taken += 1;
            }
            offset = end;
            consumed += nl + 1;
        }
        buf.drain(..consumed);
        if taken >= max {
            break;
        }
    }
    // Empty lines in between were skipped without a Line; keep the last end exact.
    Ok(())
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The default globs.
    fn names() -> Names {
        Names {
            include: vec!["*.log".into(), "*.log.*".into(), "*.log-*".into()],
            exclude: vec!["*.gz".into(), "*.zst".into()],
        }
    }

    #[test]
    fn globs_cover_the_usual_rotated_names_and_not_compressed_ones() {
        let names = names();
        let shipped = |n: &str| names.included(n) && !names.excluded(n);
        for n in [
            "web-1.log",
            "web-1.1700000000000.log",
            "access.log.1",
            "access.log-20261202",
            "access.log.2.1",
        ] {
            assert!(shipped(n), "{n}");
        }
        for n in [
            "access.log.2.gz",
            "access.log-20261202.gz",
            ".web.log",
            "notes.txt",
            "web.logger",
        ] {
            assert!(!shipped(n), "{n}");
        }
        assert!(glob("a*b?c", "axxbyc"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "a"));
        assert!(glob("*.log.*", "a.log.b.log.c"));
    }

    #[test]
    fn partial_lines_wait_and_rotation_keeps_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let mut f = std::fs::File::create(logs.join("web.log")).unwrap();
        f.write_all(b"{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let mut src = Source::open(logs.clone(), names(), &dir.path().join("state")).unwrap();
        src.scan().unwrap();
        let lines = src.read(100).unwrap();
        assert_eq!(lines.len(), 2, "the partial third line waits");
        assert!(
            src.read(100).unwrap().is_empty(),
            "handed-out lines are not read twice"
        );
        src.rewind();
        assert_eq!(src.read(100).unwrap().len(), 2, "until they are rewound");
        assert_eq!(lines[1].offset, 8);
        src.commit(&ends(&lines)).unwrap();
        f.write_all(b"3}\n").unwrap();
        // Rename rotation: the same content under a new name continues at the checkpoint.
        std::fs::rename(logs.join("web.log"), logs.join("web.1.log")).unwrap();
        assert!(
            Source::open(logs.clone(), names(), &dir.path().join("state")).is_err(),
            "one shipper per state dir"
        );
        drop(src);
        let mut again = Source::open(logs.clone(), names(), &dir.path().join("state")).unwrap();
        again.scan().unwrap();
        let rest = again.read(100).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].bytes, b"{\"a\":3}");
        assert_eq!(rest[0].id(), format!("{:016x}-16", rest[0].file));
    }

    #[test]
    fn unchanged_files_are_not_reopened_and_rewritten_ones_are() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        std::fs::write(logs.join("a.1.log"), "{\"a\":1}\n").unwrap();
        std::fs::write(logs.join("b.log"), "{\"b\":1}\n{\"b\":2}\n").unwrap();
        let mut src = Source::open(logs.clone(), names(), &dir.path().join("state")).unwrap();
        src.scan().unwrap();
        assert_eq!(src.fingerprints_read, 2);
        let lines = src.read(100).unwrap();
        assert_eq!(lines.len(), 3);
        src.commit(&ends(&lines)).unwrap();
        src.scan().unwrap();
        assert_eq!(
            src.fingerprints_read, 2,
            "nothing changed: nothing reopened"
        );
        // Rewritten in place with other content, longer than before (same inode).
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(logs.join("b.log"))
            .unwrap();
        f.write_all(b"{\"c\":1}\n{\"c\":2}\n{\"c\":3}\n").unwrap();
        drop(f);
        src.scan().unwrap();
        assert_eq!(src.fingerprints_read, 3, "the changed file is read again");
        let lines = src.read(100).unwrap();
        let texts: Vec<_> = lines.iter().map(|l| l.bytes.clone()).collect();
        assert_eq!(
            texts,
            vec![
                b"{\"c\":1}".to_vec(),
                b"{\"c\":2}".to_vec(),
                b"{\"c\":3}".to_vec()
            ],
            "new content is read from its start"
        );
    }
}
