//! Large cached files sent without copying them into the socket.
//!
//! A cached segment is kept twice: on the heap, where the [`Bytes`] a response carries point,
//! and in a twin file with the same content that nothing can write: an unlinked file in the
//! temporary directory opened read-only, or where that directory cannot hold one, a sealed
//! memfd. hyper writes a response as a vector of slices; [`ZeroCopyStream`] recognises a slice
//! of such heap bytes and hands the kernel the twin's pages with `sendfile` instead of copying
//! the bytes into the socket (what nginx does with `sendfile on` for files on disk). The
//! unlinked file is preferred: a disk file system's page cache keeps large folios, which the
//! kernel splices into the socket in fewer, larger pieces than a memfd's pages.
//!
//! While a large response is being written the socket is corked, so the kernel sends full
//! packets rather than a short one whenever a write ends (nginx's `tcp_nopush`); the flush
//! after the response uncorks it, which sends the tail at once.
//!
//! When hyper drops a connection whose viewer is still sending (a refused, oversized request
//! head), closing it at once would make the kernel answer with a reset that can destroy the
//! refusal before the viewer reads it; such a connection is closed as nginx's
//! `lingering_close` does: its write side shut, then what arrives read and discarded for a
//! moment.

use std::collections::BTreeMap;
use std::os::fd::{AsFd as _, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use prometheus::IntCounter;
use rustix::net::RecvFlags;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Files smaller than this are only kept on the heap: copying them costs less than a
/// `sendfile` call and a second copy in memory.
pub(crate) const MIN_LEN: usize = 64 * 1024;

/// Heap regions with a twin file, by start address: (length, the twin).
type Regions = BTreeMap<usize, (usize, Arc<OwnedFd>)>;

static REGIONS: Mutex<Regions> = Mutex::new(BTreeMap::new());

fn regions() -> std::sync::MutexGuard<'static, Regions> {
    REGIONS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Heap bytes with a twin file; the twin is closed when the last [`Bytes`] is dropped.
struct Twinned {
    data: Vec<u8>,
    addr: usize,
}

impl AsRef<[u8]> for Twinned {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Twinned {
    fn drop(&mut self) {
        regions().remove(&self.addr);
    }
}

/// `data` as bytes that [`ZeroCopyStream`] sends from a twin file, and whether it got one:
/// where no twin can be made they are plain bytes, copied into the socket like small files.
pub(crate) fn twinned(data: Vec<u8>) -> (Bytes, bool) {
    if data.is_empty() {
        return (Bytes::new(), false);
    }
    match unlinked_file_with(&data).or_else(|_| memfd_with(&data)) {
        Ok(fd) => {
            let addr = data.as_ptr() as usize;
            regions().insert(addr, (data.len(), Arc::new(fd)));
            (Bytes::from_owner(Twinned { data, addr }), true)
        }
        Err(error) => {
            tracing::debug!(%error, "no twin file; this file is copied into the socket");
            (Bytes::from(data), false)
        }
    }
}

fn write_all(fd: &OwnedFd, data: &[u8]) -> std::io::Result<()> {
    let mut written = 0;
    while written < data.len() {
        match rustix::io::write(fd, &data[written..])? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => written += n,
        }
    }
    Ok(())
}

/// An unlinked file in the temporary directory holding `data`, opened read-only.
fn unlinked_file_with(data: &[u8]) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    use std::os::fd::AsRawFd as _;
    let writable = rustix::fs::open(
        std::env::temp_dir(),
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    )?;
    write_all(&writable, data)?;
    let read_only = rustix::fs::open(
        format!("/proc/self/fd/{}", writable.as_raw_fd()),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(read_only)
}

/// A sealed memfd holding `data`.
fn memfd_with(data: &[u8]) -> std::io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        "livecast-segment",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    write_all(&fd, data)?;
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    Ok(fd)
}

/// The twin of `slice` and the offset in it, if `slice` lies in twinned bytes.
fn backing(slice: &[u8]) -> Option<(Arc<OwnedFd>, u64)> {
    if slice.is_empty() {
        return None;
    }
    let start = slice.as_ptr() as usize;
    let regions = regions();
    let (&base, (len, fd)) = regions.range(..=start).next_back()?;
    (start + slice.len() <= base + len).then(|| (fd.clone(), (start - base) as u64))
}

/// A viewer's TCP connection that sends slices of twinned bytes with `sendfile`, counting
/// them in `sent`, and corks itself while a large response is written.
#[derive(Debug)]
pub(crate) struct ZeroCopyStream {
    pub tcp: TcpStream,
    sent: IntCounter,
    corked: bool,
}

impl ZeroCopyStream {
    pub(crate) fn new(tcp: TcpStream, sent: IntCounter) -> Self {
        Self {
            tcp,
            sent,
            corked: false,
        }
    }

    /// Corks the socket before a write of `len` bytes if that is a large one; the next flush
    /// uncorks it.
    fn cork(&mut self, len: usize) {
        if len >= MIN_LEN && !self.corked {
            self.corked = rustix::net::sockopt::set_tcp_cork(&self.tcp, true).is_ok();
        }
    }

    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        fd: &OwnedFd,
        offset: u64,
        len: usize,
    ) -> Poll<std::io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let mut at = offset;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(self.tcp.as_fd(), fd, Some(&mut at), len).map_err(Into::into)
            });
            match sent {
                Ok(n) => {
                    self.sent.inc_by(n as u64);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Drop for ZeroCopyStream {
    fn drop(&mut self) {
        let mut probe = [0u8; 1];
        // Whatever the viewer sent that was never read; almost always nothing (one system call).
        let unread = matches!(
            rustix::net::recv(&self.tcp, &mut probe, RecvFlags::PEEK | RecvFlags::DONTWAIT),
            Ok((n, _)) if n > 0
        );
        if !unread {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A second descriptor keeps the socket open after this one closes.
        let Ok(std) = self
            .tcp
            .as_fd()
            .try_clone_to_owned()
            .map(std::net::TcpStream::from)
        else {
            return;
        };
        runtime.spawn(async move {
            if let Ok(mut tcp) = TcpStream::from_std(std) {
                livecast_telemetry::lingering_close(&mut tcp).await;
            }
        });
    }
}

impl AsyncRead for ZeroCopyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZeroCopyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.cork(buf.len());
        if let Some((fd, offset)) = backing(buf) {
            return self.poll_sendfile(cx, &fd, offset, buf.len());
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // Slices before the first twinned one go out as they are; the twinned one is sent from
        // its twin on the next call (hyper takes a short write and goes on).
        self.cork(bufs.iter().map(|b| b.len()).sum());
        // Any slice of twinned bytes, however short: after a short write the rest of a large
        // body may be a few bytes, and it still goes from the twin.
        let mapped = bufs
            .iter()
            .enumerate()
            .find_map(|(i, b)| backing(b).map(|twin| (i, twin)));
        match mapped {
            Some((0, (fd, offset))) => self.poll_sendfile(cx, &fd, offset, bufs[0].len()),
            Some((i, _)) => Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[..i]),
            None => Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.corked {
            self.corked = false;
            rustix::net::sockopt::set_tcp_cork(&self.tcp, false)?;
        }
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twinned_bytes_are_found_and_forgotten_with_their_owner() {
        let data: Vec<u8> = (0..MIN_LEN * 2).map(|i| i as u8).collect();
        let (bytes, twin) = twinned(data.clone());
        assert!(twin);
        assert_eq!(&bytes[..], &data[..]);
        let tail = bytes.slice(100..);
        let (fd, offset) = backing(&tail).expect("inside twinned bytes");
        assert_eq!(offset, 100);
        // The twin holds the same bytes and can no longer be written.
        let mut twin = vec![0; data.len()];
        assert_eq!(rustix::io::pread(&*fd, &mut twin, 0).unwrap(), data.len());
        assert_eq!(twin, data);
        assert!(rustix::io::pwrite(&*fd, b"x", 0).is_err());
        assert!(backing(&data).is_none(), "other heap bytes have no twin");
        let addr = bytes.as_ptr() as usize;
        drop((bytes, tail));
        assert!(!regions().contains_key(&addr));
    }

    #[test]
    fn both_kinds_of_twin_hold_the_bytes_and_refuse_writes() {
        let data: Vec<u8> = (0..MIN_LEN + 7).map(|i| (i % 251) as u8).collect();
        for twin in [unlinked_file_with(&data), memfd_with(&data)] {
            let twin = twin.expect("twin");
            let mut back = vec![0; data.len()];
            assert_eq!(rustix::io::pread(&twin, &mut back, 0).unwrap(), data.len());
            assert_eq!(back, data);
            assert!(rustix::io::pwrite(&twin, b"x", 0).is_err());
        }
    }
}
