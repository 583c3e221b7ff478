//! The spill buffer: batches that could not be delivered, on disk, under a byte cap.
//!
//! While the sink is down the shipper keeps reading the logs (so viewer counts stay live and a
//! log removed by its rotation loses nothing), writes each batch to its own segment file here,
//! syncs it, and only then moves the log checkpoints. Segments are independent: each is sent on
//! its own and removed once acknowledged, so a crash between the acknowledgement and the removal
//! sends it again, which the deterministic ids make harmless.
//!
//! A segment is `<seq>-<lines>.spill`, one record per line: `<document id>\t<line>\n` (access-log
//! lines hold no newline or tab outside JSON strings, and the id holds neither). When a new batch
//! would exceed the cap, the oldest segments not being sent are dropped, or the new batch if
//! nothing else can go; the caller counts and logs every dropped line.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::source::Line;

const SUFFIX: &str = ".spill";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub seq: u64,
    pub lines: usize,
    pub bytes: u64,
}

/// What a push had to drop to stay under the cap.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub lines: usize,
    pub bytes: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Spill {
    /// The spill directory in the state directory.
    dir: PathBuf,
    /// `--spill-max-mb`: the oldest segments are dropped beyond it.
    max_bytes: u64,
    /// The segments on disk, oldest first.
    segments: VecDeque<Segment>,
    /// The number the next segment gets.
    next_seq: u64,
}

impl Spill {
    /// Opens the spill directory, keeping the segments an earlier run left (they are sent
    /// first) and removing half-written ones.
    pub fn open(dir: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                std::fs::remove_file(entry.path())?;
                continue;
            }
            let parsed = name.strip_suffix(SUFFIX).and_then(|stem| {
                let (seq, lines) = stem.split_once('-')?;
                Some((seq.parse().ok()?, lines.parse().ok()?))
            });
            if let Some((seq, lines)) = parsed {
                let bytes = entry.metadata()?.len();
                segments.push(Segment { seq, lines, bytes });
            }
        }
        segments.sort_by_key(|s| s.seq);
        let next_seq = segments.last().map_or(0, |s| s.seq + 1);
        Ok(Self {
            dir,
            max_bytes,
            segments: segments.into(),
            next_seq,
        })
    }

    /// No segment waits.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Segments waiting, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    fn path(&self, segment: &Segment) -> PathBuf {
        self.dir
            .join(format!("{:020}-{}{SUFFIX}", segment.seq, segment.lines))
    }

    /// Writes `which` of `lines` as a new segment and syncs it. Segments in `busy` (being sent)
    /// are never dropped for room.
    pub fn push(
        &mut self,
        lines: &[Line],
        which: &[usize],
        busy: &[u64],
    ) -> std::io::Result<Dropped> {
        let mut record = Vec::with_capacity(which.iter().map(|i| lines[*i].bytes.len() + 40).sum());
        for i in which {
            let line = &lines[*i];
            record.extend_from_slice(line.id().as_bytes());
            record.push(b'\t');
            record.extend_from_slice(&line.bytes);
            record.push(b'\n');
        }
        let new = Segment {
            seq: self.next_seq,
            lines: which.len(),
            bytes: record.len() as u64,
        };
        let mut dropped = Dropped::default();
        let busy_bytes: u64 = self
            .segments
            .iter()
            .filter(|s| busy.contains(&s.seq))
            .map(|s| s.bytes)
            .sum();
        if busy_bytes + new.bytes > self.max_bytes {
            // Even dropping everything else would not make room: the new batch is what goes.
            dropped.lines = new.lines;
            dropped.bytes = new.bytes;
            return Ok(dropped);
        }
        while self.bytes() + new.bytes > self.max_bytes {
            let Some(old) = self
                .segments
                .iter()
                .position(|s| !busy.contains(&s.seq))
                .and_then(|at| self.segments.remove(at))
            else {
                break;
            };
            self.delete(&old)?;
            dropped.lines += old.lines;
            dropped.bytes += old.bytes;
        }
        let path = self.path(&new);
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&record)?;
            // The log checkpoint moves past these lines next: they must be on disk first.
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        self.next_seq += 1;
        self.segments.push_back(new);
        Ok(dropped)
    }

    /// Reads a segment back as lines, with the ids they had.
    pub fn read(&self, segment: &Segment) -> std::io::Result<Vec<Line>> {
        let bytes = std::fs::read(self.path(segment))?;
        let mut lines = Vec::with_capacity(segment.lines);
        for record in bytes.split(|b| *b == b'\n').filter(|r| !r.is_empty()) {
            let parsed = record.iter().position(|b| *b == b'\t').and_then(|tab| {
                let id = std::str::from_utf8(&record[..tab]).ok()?;
                let (file, offset) = id.split_once('-')?;
                Some((
                    u64::from_str_radix(file, 16).ok()?,
                    offset.parse::<u64>().ok()?,
                    tab,
                ))
            });
            let Some((file, offset, tab)) = parsed else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("corrupt spill segment {}", self.path(segment).display()),
                ));
            };
            let bytes = record[tab + 1..].to_vec();
            lines.push(Line {
                file,
                offset,
                end: offset + bytes.len() as u64 + 1,
                bytes,
            });
        }
        Ok(lines)
    }

    /// Removes a delivered segment.
    pub fn remove(&mut self, seq: u64) -> std::io::Result<()> {
        if let Some(at) = self.segments.iter().position(|s| s.seq == seq) {
            if let Some(segment) = self.segments.remove(at) {
                self.delete(&segment)?;
            }
        }
        Ok(())
    }

    /// Renames an unreadable segment to `<name>.corrupt` (kept, no longer sent or counted).
    pub fn set_aside(&mut self, seq: u64) -> std::io::Result<()> {
        if let Some(at) = self.segments.iter().position(|s| s.seq == seq) {
            if let Some(segment) = self.segments.remove(at) {
                let path = self.path(&segment);
                std::fs::rename(&path, path.with_extension("spill.corrupt"))?;
            }
        }
        Ok(())
    }

    fn delete(&self, segment: &Segment) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(segment)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Makes a rename durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(file: u64, offset: u64, text: &str) -> Line {
        Line {
            file,
            offset,
            end: offset + text.len() as u64 + 1,
            bytes: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn segments_keep_ids_survive_a_restart_and_stay_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let lines = vec![
            line(0xabc, 0, r#"{"a":"x\ty"}"#),
            line(0xabc, 13, "not kept"),
            line(7, 99, r#"{"b":2}"#),
        ];
        let mut spill = Spill::open(dir.path().join("spill"), 200).unwrap();
        assert_eq!(
            spill.push(&lines, &[0, 2], &[]).unwrap(),
            Dropped::default()
        );
        let first = *spill.segments().next().unwrap();
        assert_eq!(first.lines, 2);
        std::fs::write(dir.path().join("spill/9-9.tmp"), "half").unwrap();
        drop(spill);

        let mut spill = Spill::open(dir.path().join("spill"), 200).unwrap();
        assert!(!dir.path().join("spill/9-9.tmp").exists());
        let back = spill.read(&first).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].id(), lines[0].id());
        assert_eq!(back[0].bytes, lines[0].bytes);
        assert_eq!(back[1].id(), lines[2].id());

        // 2 more segments of about 40 bytes fit; the fourth forces the oldest out, unless it
        // is being sent, in which case the next oldest goes.
        spill.push(&lines, &[0, 2], &[]).unwrap();
        spill.push(&lines, &[0, 2], &[]).unwrap();
        let full = spill.bytes();
        assert!(full <= 200);
        let dropped = spill.push(&lines, &[0, 2, 0, 2], &[first.seq]).unwrap();
        assert_eq!(dropped.lines, 4, "the two after the busy one");
        assert_eq!(spill.segments().next().unwrap().seq, first.seq);
        assert_eq!(spill.segments().count(), 2);
        assert!(spill.bytes() <= 200);
        // A batch larger than the cap is itself dropped.
        let huge: Vec<usize> = vec![0; 20];
        let before = spill.bytes();
        let dropped = spill
            .push(
                &lines,
                &huge,
                &spill.segments().map(|s| s.seq).collect::<Vec<_>>(),
            )
            .unwrap();
        assert_eq!(dropped.lines, 20);
        assert_eq!(spill.bytes(), before);
        spill.remove(first.seq).unwrap();
        assert!(spill.segments().all(|s| s.seq != first.seq));
        // A damaged segment is refused and can be set aside.
        let last = *spill.segments().last().unwrap();
        std::fs::write(spill.path(&last), "no tab here\n").unwrap();
        assert_eq!(
            spill.read(&last).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        spill.set_aside(last.seq).unwrap();
        assert!(spill.path(&last).with_extension("spill.corrupt").exists());
        assert!(spill.segments().all(|s| s.seq != last.seq));
        assert_eq!(
            std::fs::read_dir(dir.path().join("spill")).unwrap().count(),
            spill.segments().count() + 1,
            "the segments and the one set aside"
        );
    }
}
