//! The files of one stream directory, written so that a front-end only ever sees whole files
//! and so that the file system does as little as it can per update.
//!
//! - Media files are written under a hidden name and renamed into place.
//! - With byte-range parts (LL-HLS) a segment is instead one file that each part is appended
//!   to under its final name; the playlist names a part only once its bytes are there.
//! - Playlist updates go into one of [`PLAYLIST_SPARES`] hidden spare files that then trades
//!   places with `index.m3u8` (`renameat2` with `RENAME_EXCHANGE`). The spares and the
//!   playlist stay open, so an update opens nothing, and is trimmed only when it is shorter
//!   than what the file held.
//! - Media files whose time is up are not deleted but renamed to a hidden free name and written
//!   over by the next new file or segment: on ext4 each new inode costs a scan past the
//!   recently deleted ones (`recently_deleted`, `find_inode_bit`), and writing over blocks a
//!   file already has skips their allocation. A segment grown over a free file holds old bytes
//!   past its parts until it is complete or loses a part and is trimmed; until then a reader
//!   goes only as far as the playlist lists its parts.
//!
//! Every method blocks on the file system (page-cache writes of a part or a playlist).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use livecast_media::playlist::PLAYLIST_NAME as PLAYLIST;

/// Spare files a playlist update cycles through.
const PLAYLIST_SPARES: usize = 4;

/// Name prefix of a retired media file waiting to be written over.
const FREE_PREFIX: &str = ".free.";

/// At most this many retired files are kept for reuse; more are deleted.
const MAX_FREE: usize = 32;

pub(crate) struct StreamDir {
    dir: PathBuf,
    /// Which spare the next playlist update is written to.
    spare: usize,
    /// The spares' files as far as they are open, by spare number.
    spares: [Option<Written>; PLAYLIST_SPARES],
    /// The playlist's file, if it is open.
    playlist: Option<Written>,
    /// Retired files to write over, by path.
    free: Vec<PathBuf>,
    /// Number for the next free name.
    next_free: u64,
    /// The segment that parts are being appended to.
    growing: Option<Growing>,
}

/// An open file and how long its content is.
struct Written {
    file: std::fs::File,
    len: u64,
}

impl Written {
    /// Replaces the content with `data`, trimming only when it is shorter than before.
    fn replace(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        self.file.write_all_at(data, 0)?;
        let len = data.len() as u64;
        if len < self.len {
            self.file.set_len(len)?;
        }
        self.len = len;
        Ok(())
    }
}

struct Growing {
    name: String,
    file: std::fs::File,
    len: u64,
}

impl StreamDir {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            spare: 0,
            spares: Default::default(),
            playlist: None,
            free: Vec::new(),
            next_free: 0,
            growing: None,
        }
    }

    /// Appends a part to segment `name` and returns the offset the part starts at. The
    /// segment's first part opens its file: a free file renamed to the name if there is one
    /// (its old bytes past what is written so far are trimmed off by
    /// [`StreamDir::end_segment`]; until then only the listed parts are meant to be read), else
    /// a new file. A failed write leaves the segment's length where it was, so the next part
    /// goes where this one should have.
    pub fn append(&mut self, name: &str, data: &[u8]) -> std::io::Result<u64> {
        use std::os::unix::fs::FileExt as _;
        if self.growing.as_ref().is_none_or(|g| g.name != name) {
            self.end_segment()?;
            let target = self.dir.join(name);
            let file = match self.open_free()? {
                Some((free, file)) => {
                    std::fs::rename(&free, &target)?;
                    file
                }
                None => std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&target)?,
            };
            self.growing = Some(Growing {
                name: name.to_string(),
                file,
                len: 0,
            });
        }
        let Some(growing) = self.growing.as_mut() else {
            return Err(std::io::Error::other("no segment file"));
        };
        let offset = growing.len;
        growing.file.write_all_at(data, offset)?;
        growing.len += data.len() as u64;
        Ok(offset)
    }

    /// The segment parts were appended to is complete: what is left of a free file's old
    /// content is cut off and the file closed.
    pub fn end_segment(&mut self) -> std::io::Result<()> {
        match self.growing.take() {
            Some(growing) => growing.file.set_len(growing.len),
            None => Ok(()),
        }
    }

    /// The segment being built lost a part (the pipeline appends nothing more to it): its file
    /// is cut back to the parts written so far at once. Over a free file it would otherwise hold old
    /// bytes past them, and a file the playlist no longer names as growing is served whole.
    pub fn cut_back_segment(&mut self) {
        if let Some(growing) = &self.growing {
            let _ = growing.file.set_len(growing.len);
        }
    }

    /// The segment parts were appended to will not be listed: its file is emptied, which
    /// gives its blocks back (it is retired with the playlist entry that names it).
    pub fn abandon_segment(&mut self) {
        if let Some(growing) = self.growing.take() {
            let _ = growing.file.set_len(0);
        }
    }

    /// The next free file, opened for writing (without truncation), with its path.
    fn open_free(&mut self) -> std::io::Result<Option<(PathBuf, std::fs::File)>> {
        while let Some(free) = self.free.pop() {
            match std::fs::OpenOptions::new().write(true).open(&free) {
                Ok(file) => return Ok(Some((free, file))),
                // Deleted behind our back (a previous publish's final clean-up): try the next.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    /// Takes over the free files an earlier publish of this stream left behind.
    pub fn adopt_free_files(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_prefix(FREE_PREFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            self.next_free = self.next_free.max(number + 1);
            if self.free.len() < MAX_FREE {
                self.free.push(entry.path());
            } else {
                remove_quietly(&entry.path());
            }
        }
    }

    /// Writes media file `name`: over a free file if there is one, else into a new hidden
    /// file; either is renamed into place once whole.
    pub fn write(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let target = self.dir.join(name);
        if let Some((free, file)) = self.open_free()? {
            overwrite(file, data)?;
            return std::fs::rename(&free, &target);
        }
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, target)
    }

    /// Replaces a small hidden file (`livecast_media::publish`) whole: written beside it, then
    /// renamed over it.
    pub fn write_hidden(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, self.dir.join(name))
    }

    /// Replaces the playlist atomically without creating a file per update: the text goes
    /// into the next hidden spare, which then trades places with the playlist. The previous
    /// text lives on in that spare, still whole for a reader that opened it, until
    /// [`PLAYLIST_SPARES`] updates later. Where the file system cannot exchange, or there is
    /// no playlist yet, a plain rename does.
    pub fn write_playlist(&mut self, text: &[u8]) -> std::io::Result<()> {
        let slot = self.spare;
        self.spare = (self.spare + 1) % PLAYLIST_SPARES;
        let spare = self.dir.join(format!(".{PLAYLIST}.{slot}"));
        let mut written = match self.spares[slot].take() {
            Some(written) => written,
            None => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&spare)?;
                // Left by an earlier run: trimmed where the update is shorter.
                let len = file.metadata()?.len();
                Written { file, len }
            }
        };
        written.replace(text)?;
        let playlist = self.dir.join(PLAYLIST);
        let exchanged = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &spare,
            rustix::fs::CWD,
            &playlist,
            rustix::fs::RenameFlags::EXCHANGE,
        );
        match exchanged {
            Ok(()) => {
                // The spare's name now holds the previous playlist, open or not.
                self.spares[slot] = self.playlist.replace(written);
                Ok(())
            }
            Err(e)
                if [
                    rustix::io::Errno::NOENT,
                    rustix::io::Errno::INVAL,
                    rustix::io::Errno::NOSYS,
                ]
                .contains(&e) =>
            {
                std::fs::rename(&spare, &playlist)?;
                self.playlist = Some(written);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A media file whose time is up: kept under a free name to be written over, or deleted
    /// when enough are kept.
    pub fn retire(&mut self, path: &Path) {
        if self.free.len() < MAX_FREE {
            let free = self.dir.join(format!("{FREE_PREFIX}{}", self.next_free));
            self.next_free += 1;
            match std::fs::rename(path, &free) {
                Ok(()) => return self.free.push(free),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => {}
            }
        }
        remove_quietly(path);
    }

    /// Deletes the free files (the stream ended).
    pub fn delete_free_files(&mut self) {
        for path in self.free.drain(..) {
            remove_quietly(&path);
        }
    }
}

/// Replaces the content of `file` with `data` without first truncating it to nothing: ext4
/// takes a file emptied and rewritten for a replace-by-truncate and starts writing it back to
/// disk when it is closed (`auto_da_alloc`), which costs the closing thread an I/O submission
/// per file; an overwrite then a trim of what is left of the old content does not, and reuses
/// the blocks the file already has.
fn overwrite(mut file: std::fs::File, data: &[u8]) -> std::io::Result<()> {
    file.write_all(data)?;
    file.set_len(data.len() as u64)
}

pub(crate) fn remove_quietly(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(%error, path = %path.display(), "cannot delete retired segment");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn playlist_updates_reuse_their_spares() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = StreamDir::new(dir.path().to_owned());
        let mut inodes = HashSet::new();
        // Updates longer and shorter than what each reused file held before.
        let text = |round: usize| format!("#EXTM3U\n#{}{round}\n", "x".repeat(round * 7 % 23));
        for round in 0..3 * PLAYLIST_SPARES {
            files.write_playlist(text(round).as_bytes()).unwrap();
            let playlist = dir.path().join(PLAYLIST);
            assert_eq!(std::fs::read_to_string(&playlist).unwrap(), text(round));
            if round > 0 {
                // The previous text lives on, whole, in the spare just traded.
                let spare = dir
                    .path()
                    .join(format!(".{PLAYLIST}.{}", round % PLAYLIST_SPARES));
                assert_eq!(std::fs::read_to_string(spare).unwrap(), text(round - 1));
            }
            inodes.insert(std::fs::metadata(&playlist).unwrap().ino());
        }
        // A later run over the same directory finds the files as they were left.
        let mut again = StreamDir::new(dir.path().to_owned());
        for round in 0..2 * PLAYLIST_SPARES {
            again.write_playlist(text(round).as_bytes()).unwrap();
            let playlist = dir.path().join(PLAYLIST);
            assert_eq!(std::fs::read_to_string(&playlist).unwrap(), text(round));
        }
        // The first update has nothing to trade with; after that the same few inodes serve.
        assert!(
            inodes.len() <= PLAYLIST_SPARES + 1,
            "{} inodes",
            inodes.len()
        );
        let hidden = names(dir.path()).len() - 1;
        assert!(hidden <= PLAYLIST_SPARES, "{hidden} spare files");
    }

    #[test]
    fn a_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = StreamDir::new(dir.path().to_owned());
        files.write("a-1.m4s", b"media").unwrap();
        assert_eq!(names(dir.path()), vec!["a-1.m4s"]);
    }

    #[test]
    fn retired_files_are_written_over_instead_of_new_ones_created() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = StreamDir::new(dir.path().to_owned());
        let mut inodes = HashSet::new();
        for n in 0..20 {
            let name = format!("a-{n}.m4s");
            // Longer first, shorter later: the old content must not show through.
            let data = vec![b'0' + (n % 10) as u8; 1000 - n * 10];
            files.write(&name, &data).unwrap();
            let path = dir.path().join(&name);
            assert_eq!(std::fs::read(&path).unwrap(), data);
            inodes.insert(std::fs::metadata(&path).unwrap().ino());
            if n >= 2 {
                files.retire(&dir.path().join(format!("a-{}.m4s", n - 2)));
            }
        }
        // Two files live at any time, one more free between a retirement and the next write.
        assert!(inodes.len() <= 3, "{} inodes for 20 files", inodes.len());
        let left = names(dir.path());
        assert_eq!(left.iter().filter(|n| !n.starts_with('.')).count(), 2);

        // A later publish of the stream takes the free files over, and deletes them at its end.
        let mut again = StreamDir::new(dir.path().to_owned());
        again.adopt_free_files();
        assert_eq!(again.free.len(), files.free.len());
        again.write("b-1.m4s", b"new").unwrap();
        assert!(inodes.contains(&std::fs::metadata(dir.path().join("b-1.m4s")).unwrap().ino()));
        again.retire(&dir.path().join("b-1.m4s"));
        again.delete_free_files();
        assert_eq!(names(dir.path()), vec!["a-18.m4s", "a-19.m4s"]);
        // A free file that vanished is skipped: the write creates a new file.
        files.write("c-1.m4s", b"c").unwrap();
        assert_eq!(std::fs::read(dir.path().join("c-1.m4s")).unwrap(), b"c");
    }

    #[test]
    fn parts_are_appended_to_their_segment_over_a_free_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = StreamDir::new(dir.path().to_owned());
        assert_eq!(files.append("a-1.m4s", b"one").unwrap(), 0);
        assert_eq!(files.append("a-1.m4s", b"two").unwrap(), 3);
        files.end_segment().unwrap();
        assert_eq!(files.append("a-2.m4s", b"three").unwrap(), 0);
        assert_eq!(
            std::fs::read(dir.path().join("a-1.m4s")).unwrap(),
            b"onetwo"
        );
        let first = std::fs::metadata(dir.path().join("a-1.m4s")).unwrap().ino();
        // The next segment after a-2 grows over a-1's inode; its old tail is gone at the end.
        files.retire(&dir.path().join("a-1.m4s"));
        assert_eq!(files.append("a-3.m4s", b"4").unwrap(), 0);
        let third = dir.path().join("a-3.m4s");
        assert_eq!(std::fs::metadata(&third).unwrap().ino(), first);
        assert_eq!(std::fs::read(&third).unwrap()[..1], *b"4");
        files.end_segment().unwrap();
        assert_eq!(std::fs::read(&third).unwrap(), b"4");
        assert_eq!(std::fs::read(dir.path().join("a-2.m4s")).unwrap(), b"three");
        assert_eq!(names(dir.path()), vec!["a-2.m4s", "a-3.m4s"]);
    }

    #[test]
    fn a_segment_that_lost_a_part_holds_only_what_was_written_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = StreamDir::new(dir.path().to_owned());
        files.write("old.m4s", &[0xAA; 1000]).unwrap();
        files.retire(&dir.path().join("old.m4s"));
        files.append("b-1.m4s", b"part").unwrap();
        let path = dir.path().join("b-1.m4s");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            1000,
            "grown over the free file"
        );
        files.cut_back_segment();
        assert_eq!(std::fs::read(&path).unwrap(), b"part");
        files.abandon_segment();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }
}
