//! Reading a large file without copying it out of the page cache: an mmap guarded by a read
//! lease (docs/ARCHITECTURE.md, "Hashing from a leased mapping").
//!
//! A mapped file that another process truncates is a SIGBUS at the next touch of a page past
//! the new end, which Rust cannot recover from. A read lease (`fcntl(F_SETLEASE, F_RDLCK)`)
//! closes that door: the kernel grants it only while no one has the file open for writing, and
//! from then on an open for writing or a truncate by anyone waits until the holder lets go (up
//! to `/proc/sys/fs/lease-break-time`, 45 s by default). So while the lease is held, the bytes
//! cannot change and the file cannot shrink. The break is announced by a signal and shows in
//! `F_GETLEASE`; [`Leased::broken`] polls the latter, and whoever reads the mapping stops
//! touching it and drops it (munmap, then the lease goes) as soon as it sees a break (the
//! scanner then reads the file instead). The
//! signal is set (`F_SETSIG`) to SIGURG, whose default action is to do nothing: SIGIO, the
//! default, would end the process.
//!
//! Files the kernel refuses a lease for (someone has them open for writing, they belong to
//! another user, the filesystem has no leases) are read as before, with `read`.
//!
//! The limit of the argument: a thread stopped for longer than the lease-break time in the
//! middle of a block (a debugger, SIGSTOP) would touch the mapping after the kernel gave up
//! the lease. Nothing in Cairn waits that long between two checks.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;

/// `F_SETSIG` from `<asm-generic/fcntl.h>` (the libc crate does not export it; PA-RISC alone
/// numbers it differently).
const F_SETSIG: libc::c_int = 10;

/// Files below this size are read: a mapping, a lease and their release cost more than the
/// copy they save.
pub const MAP_FROM: u64 = 16 << 20;

/// A read-only mapping of a whole file, valid while the read lease it was made under is held.
pub struct Leased<'f> {
    file: &'f File,
    ptr: *mut libc::c_void,
    len: usize,
    /// The mapping's pages below this offset were dropped from the process ([`Leased::drop_below`]).
    dropped: std::cell::Cell<usize>,
}

impl<'f> Leased<'f> {
    /// Maps `file` (opened read-only) when the kernel grants a read lease on it and it is at
    /// least [`MAP_FROM`] bytes long; `None` otherwise (read it instead).
    pub fn map(file: &'f File) -> Option<Self> {
        let large = |md: &std::fs::Metadata| md.is_file() && md.len() >= MAP_FROM;
        // Most files are small: they cost one fstat here, not a lease taken and given back.
        if !file.metadata().is_ok_and(|md| large(&md)) {
            return None;
        }
        let fd = file.as_raw_fd();
        // SAFETY: fcntl with integer arguments on a descriptor this function borrows; it
        // touches no memory of ours.
        unsafe {
            if libc::fcntl(fd, F_SETSIG, libc::SIGURG) == -1
                || libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) == -1
            {
                return None;
            }
        }
        // Under the lease the size cannot change: this is the length the mapping may read.
        let len = match file.metadata() {
            Ok(md) if large(&md) => usize::try_from(md.len()).ok(),
            _ => None,
        };
        let Some(len) = len else {
            release(fd);
            return None;
        };
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file, placed by the
        // kernel; nothing else refers to that range. The lease keeps the file at `len` bytes or
        // more (see the module's documentation) until `Drop` unmaps it first.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            release(fd);
            return None;
        }
        // SAFETY: advice on the range just mapped; a refusal changes nothing but speed.
        unsafe {
            libc::madvise(ptr, len, libc::MADV_SEQUENTIAL);
        }
        Some(Leased {
            file,
            ptr,
            len,
            dropped: std::cell::Cell::new(0),
        })
    }

    /// The file's bytes. Stop touching them once [`Leased::broken`] says so.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives, and under the
        // lease no one can write or shorten the file (module documentation).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }

    /// Unmaps from this process the pages below `offset` (rounded down to a page): they stay
    /// in the page cache, but stop counting in its resident set, which would otherwise grow by
    /// the whole file. A page touched again is mapped again, so a hasher still reading there
    /// loses a little time, never a byte.
    pub fn drop_below(&self, offset: usize) {
        let page = 4096;
        let end = offset.min(self.len) / page * page;
        let from = self.dropped.get();
        if end <= from {
            return;
        }
        // SAFETY: advice on a page-aligned part of the range `map` mapped. MADV_DONTNEED on a
        // shared file mapping only drops page table entries; the bytes read there stay the
        // file's bytes, fetched again from the page cache on the next touch.
        unsafe {
            libc::madvise(
                self.ptr.cast::<u8>().add(from).cast(),
                end - from,
                libc::MADV_DONTNEED,
            );
        }
        self.dropped.set(end);
    }

    /// Whether someone wants to write or truncate the file: the lease is being broken, and
    /// the mapping must be dropped soon.
    pub fn broken(&self) -> bool {
        // SAFETY: as in `map`.
        let lease = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETLEASE) };
        lease != libc::F_RDLCK
    }
}

impl Drop for Leased<'_> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range `map` mapped; the borrow of `self` that `bytes`
        // handed out has ended, so nothing refers to it any more.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
        release(self.file.as_raw_fd());
    }
}

fn release(fd: i32) {
    // SAFETY: as in `map`. A failure leaves the lease to the file's close.
    unsafe {
        libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn big_file(dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("big");
        let mut f = File::create(&path).unwrap();
        let block: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
        for _ in 0..(MAP_FROM >> 20) {
            f.write_all(&block).unwrap();
        }
        path
    }

    /// The mapping, or `None` where the kernel grants no lease (a filesystem without leases,
    /// no CAP_LEASE on a file not ours): the test then has nothing to check, and says so.
    fn leased(f: &File) -> Option<Leased<'_>> {
        let m = Leased::map(f);
        if m.is_none() {
            eprintln!("no read lease here; the read path is used");
        }
        m
    }

    #[test]
    fn a_large_file_maps_with_its_bytes_and_a_small_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = big_file(dir.path());
        let f = File::open(&path).unwrap();
        let Some(m) = leased(&f) else { return };
        let expected = std::fs::read(&path).unwrap();
        assert_eq!(m.bytes(), expected);
        assert!(!m.broken());
        // Dropped pages read back the same bytes.
        m.drop_below(5 << 20 | 123);
        m.drop_below(1 << 20);
        assert_eq!(m.bytes(), expected);
        drop(m);
        let small = dir.path().join("small");
        std::fs::write(&small, b"x").unwrap();
        assert!(Leased::map(&File::open(&small).unwrap()).is_none());
    }

    #[test]
    fn a_file_open_for_writing_is_not_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = big_file(dir.path());
        let _writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        assert!(Leased::map(&File::open(&path).unwrap()).is_none());
    }

    #[test]
    fn a_writer_opening_the_file_breaks_the_lease_and_waits_for_its_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = big_file(dir.path());
        let f = File::open(&path).unwrap();
        let Some(m) = leased(&f) else { return };
        // Another process truncates the file: the shell's `>` opens it with O_TRUNC and
        // without O_NONBLOCK, so the open waits for the lease. (`truncate(1)` opens with
        // O_NONBLOCK and is refused outright: EAGAIN.)
        let mut truncate = std::process::Command::new("sh")
            .args(["-c", ": > \"$1\"", "sh"])
            .arg(&path)
            .spawn()
            .unwrap();
        // Bounded poll: the break shows within the writer's open.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !m.broken() {
            assert!(
                std::time::Instant::now() < deadline,
                "the lease never broke"
            );
            std::thread::yield_now();
        }
        // Still held: the truncate waits, and every byte is still there to read.
        assert_eq!(m.bytes().len() as u64, MAP_FROM);
        assert!(
            truncate.try_wait().unwrap().is_none(),
            "truncate ran under the lease"
        );
        let sum: u64 = m.bytes().iter().map(|&b| u64::from(b)).sum();
        assert!(sum > 0);
        drop(m);
        assert!(truncate.wait().unwrap().success());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
