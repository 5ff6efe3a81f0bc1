//! Content-defined chunking (FastCDC v2020) and BLAKE3 chunk ids, streamed with bounded memory.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;

use cairn_proto::{ChunkId, ContentId, content_id_of};
use fastcdc::v2020::{FastCDC, Normalization};

/// FastCDC v2020 size limits in bytes. All three must be even, `min <= avg <= max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkParams {
    /// 512 KiB / 1 MiB / 4 MiB: the sizes every device must agree on.
    pub const DEFAULT: ChunkParams = ChunkParams {
        min: cairn_proto::DEFAULT_CHUNK_MIN,
        avg: cairn_proto::DEFAULT_CHUNK_AVG,
        max: cairn_proto::DEFAULT_CHUNK_MAX,
    };
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One chunk of a file: its id and where it lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub id: ChunkId,
    pub offset: u64,
    pub length: u32,
}

/// A file's chunks in order, its size and its content id (the hash of the manifest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChunks {
    pub chunks: Vec<Chunk>,
    pub size: u64,
    pub content_id: ContentId,
}

/// Chunks and hashes everything `reader` yields, holding at most a few buffers of about
/// `max(16 MiB, 4 × params.max)` bytes however long the stream is.
///
/// Reads happen on the calling thread, which also finds the cut points; hashing runs on up to
/// [`MAX_HASH_WORKERS`] other threads (and on the calling thread whenever they fall behind).
pub fn chunk_reader<R: Read + Send>(reader: R, params: ChunkParams) -> io::Result<FileChunks> {
    chunk_reader_tuned(reader, params, Tuning::for_params(params))
}

fn chunk_reader_tuned<R: Read + Send>(
    mut reader: R,
    params: ChunkParams,
    tuning: Tuning,
) -> io::Result<FileChunks> {
    check_params(params).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // The first buffer grows with what is read: most files are far smaller than a streaming
    // buffer, and zeroing 16 MiB for each 4 KiB file was most of the cost of scanning small files.
    let mut first = Vec::new();
    (&mut reader)
        .take(tuning.buf_len as u64)
        .read_to_end(&mut first)?;
    let filled = first.len();
    let eof = filled < tuning.buf_len;
    let chunks = if eof {
        // The whole stream fit in one buffer: no carry-over, no buffer pool.
        chunk_bytes_tuned(&first[..filled], params, tuning)
    } else {
        with_hash_workers(|pipe: &mut Pipeline<Vec<u8>>| {
            stream_buffers(&mut reader, params, first, filled, pipe)
        })?
    };
    Ok(file_chunks(chunks))
}

/// Chunks and hashes bytes already in memory. Same boundaries and ids as [`chunk_reader`].
///
/// # Panics
/// When `params` break FastCDC v2020's limits (see [`check_params`]).
pub fn chunk_bytes(data: &[u8], params: ChunkParams) -> Vec<Chunk> {
    if let Err(e) = check_params(params) {
        panic!("{e}");
    }
    chunk_bytes_tuned(data, params, Tuning::for_params(params))
}

/// Chunks and hashes a mapped file ([`crate::mapped::Leased`]) like [`chunk_bytes`], asking
/// `stop` after each batch of about 8 MiB, with the offset the batch ends at: `None` once it
/// says so, after the hashers have let go of `data`. Params must have passed [`check_params`].
pub fn chunk_mapped(
    data: &[u8],
    params: ChunkParams,
    stop: impl Fn(usize) -> bool,
) -> Option<FileChunks> {
    chunk_bytes_until(data, params, Tuning::for_params(params), stop).map(file_chunks)
}

fn chunk_bytes_tuned(data: &[u8], params: ChunkParams, tuning: Tuning) -> Vec<Chunk> {
    // Never stopped, so always Some.
    chunk_bytes_until(data, params, tuning, |_| false).expect("nothing stops it")
}

fn chunk_bytes_until(
    data: &[u8],
    params: ChunkParams,
    tuning: Tuning,
    stop: impl Fn(usize) -> bool,
) -> Option<Vec<Chunk>> {
    if data.len() < tuning.inline_below {
        let cuts: Vec<Range<usize>> = cut_points(data, params).collect();
        let job = Job {
            seq: 0,
            buf: data,
            base: 0,
            cuts,
        };
        return Some(hash_job(job).chunks);
    }
    let stopped = std::cell::Cell::new(false);
    let result: io::Result<Vec<Chunk>> = with_hash_workers(|pipe: &mut Pipeline<&[u8]>| {
        let mut cuts = Vec::new();
        let mut batch_start = 0;
        for cut in cut_points(data, params) {
            let end = cut.end;
            cuts.push(cut);
            if end - batch_start >= tuning.batch_bytes {
                pipe.submit(data, 0, std::mem::take(&mut cuts));
                batch_start = end;
                if stop(end) {
                    stopped.set(true);
                    return Ok(());
                }
            }
        }
        if !cuts.is_empty() {
            pipe.submit(data, 0, cuts);
        }
        Ok(())
    });
    // The closure above never fails, so neither does the pipeline; it returns only after every
    // hasher is done with `data`.
    let chunks = result.expect("in-memory chunking does no I/O");
    (!stopped.get()).then_some(chunks)
}

/// The content id of a chunk list, wrapped with the size.
fn file_chunks(chunks: Vec<Chunk>) -> FileChunks {
    let size = chunks.last().map_or(0, |c| c.offset + u64::from(c.length));
    let content_id = content_id_of(chunks.iter().map(|c| (&c.id, u64::from(c.length))));
    FileChunks {
        chunks,
        size,
        content_id,
    }
}

/// Why `params` cannot be used, if they cannot: FastCDC v2020 wants even sizes,
/// 64 B ≤ min ≤ 1 MiB, 256 B ≤ avg ≤ 4 MiB, 1 KiB ≤ max ≤ 16 MiB and min ≤ avg ≤ max.
pub fn check_params(p: ChunkParams) -> Result<(), String> {
    use fastcdc::v2020::{
        AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
    };
    let (min, avg, max) = (p.min as usize, p.avg as usize, p.max as usize);
    let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
        && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
        && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
        && min <= avg
        && avg <= max
        && [min, avg, max].iter().all(|v| v % 2 == 0);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid chunk parameters {p:?}: FastCDC v2020 needs even sizes with {MINIMUM_MIN} ≤ min ≤ {MINIMUM_MAX}, {AVERAGE_MIN} ≤ avg ≤ {AVERAGE_MAX}, {MAXIMUM_MIN} ≤ max ≤ {MAXIMUM_MAX} and min ≤ avg ≤ max"
        ))
    }
}

/// At most this many hashing threads besides the caller's: each may hold one read buffer.
pub const MAX_HASH_WORKERS: usize = 3;
/// Sizes that trade memory and thread overhead against parallelism; tests shrink them.
#[derive(Clone, Copy, Debug)]
struct Tuning {
    /// Read buffer size: with an unfinished chunk (≤ max) carried over, the rest is new bytes.
    buf_len: usize,
    /// Inputs shorter than this are chunked and hashed on the calling thread: spawning costs more.
    inline_below: usize,
    /// In-memory input is handed to the hashers in batches of about this many bytes.
    batch_bytes: usize,
}

impl Tuning {
    fn for_params(params: ChunkParams) -> Self {
        Tuning {
            buf_len: (16usize << 20).max(4 * params.max as usize),
            inline_below: 1 << 20,
            batch_bytes: 8 << 20,
        }
    }
}

/// FastCDC's normalization level, part of the chunking scheme like the sizes: every device must
/// use the same. Level 2 keeps chunk sizes closer to the average than the crate's default (level
/// 1): measured over 200 random 20 MiB files (docs/ARCHITECTURE.md), appending 1 MiB re-cut into
/// at most 2 new chunks in 98% of cases instead of 87%, and a 100-byte insert still costs 1 chunk.
pub const NORMALIZATION: Normalization = cairn_cdc::NORMALIZATION;

/// FastCDC v2020 over `data` with the namespace's sizes and [`NORMALIZATION`].
pub fn cdc(data: &[u8], params: ChunkParams) -> FastCDC<'_> {
    FastCDC::with_level(
        data,
        params.min as usize,
        params.avg as usize,
        params.max as usize,
        NORMALIZATION,
    )
}

/// The cut points of `data` as ranges, the last one ending at `data.len()`: exactly [`cdc`]'s
/// chunks, found by [`cairn_cdc::Cutter`] (the same search, hashed as several lanes at once).
fn cut_points(data: &[u8], params: ChunkParams) -> impl Iterator<Item = Range<usize>> + '_ {
    let cutter = cairn_cdc::Cutter::new(params.min, params.avg, params.max);
    let mut start = 0;
    std::iter::from_fn(move || {
        let rest = &data[start..];
        if rest.is_empty() {
            return None;
        }
        let chunk = start..start + cutter.cut(rest);
        start = chunk.end;
        Some(chunk)
    })
}

/// Reads into `buf[filled..]` until it is full or the reader is exhausted.
/// Returns the new fill level and whether the end of the stream was seen.
fn fill<R: Read>(reader: &mut R, buf: &mut [u8], mut filled: usize) -> io::Result<(usize, bool)> {
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok((filled, true)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((filled, false))
}

/// Buffers a reader thread fills ahead of the cutting.
const READ_AHEAD: usize = 1;

/// The streaming loop: cut each full buffer, hand its finished chunks to the hashers, and carry
/// the unfinished last chunk to the front of the next buffer. FastCDC v2020 decides a cut from
/// the bytes after the chunk's start only, so this yields exactly the cuts of the whole stream.
///
/// Reading runs on its own thread, a buffer ahead: copying from the page cache is a quarter of
/// the work, and cutting (FastCDC is serial) is the longest stage. Each buffer after the first
/// keeps `params.max` bytes free in front of what is read into it, room for the carried-over
/// chunk, so the reader never waits to learn where the carry ends.
fn stream_buffers<R: Read + Send>(
    reader: &mut R,
    params: ChunkParams,
    first: Vec<u8>,
    filled: usize,
    pipe: &mut Pipeline<Vec<u8>>,
) -> io::Result<()> {
    let data_len = first.len();
    assert!(
        data_len > params.max as usize,
        "a carried-over chunk must leave room to read"
    );
    let reserve = params.max as usize;
    let buf_len = reserve + data_len;
    // Buffers alive at once: one being cut, READ_AHEAD + 1 with the reader, one per queued or
    // running job.
    let max_buffers = pipe.workers + 3 + READ_AHEAD;
    thread::scope(|s| {
        let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(READ_AHEAD + 1);
        let (full_tx, full_rx) =
            mpsc::sync_channel::<io::Result<(Vec<u8>, usize, bool)>>(READ_AHEAD + 1);
        s.spawn(move || {
            for mut b in empty_rx {
                let read = fill(reader, &mut b, reserve);
                let last = !matches!(read, Ok((_, false)));
                // A closed channel: the cutting stopped (an error); so does the reading.
                if full_tx.send(read.map(|(end, eof)| (b, end, eof))).is_err() || last {
                    return;
                }
            }
        });
        for _ in 0..=READ_AHEAD {
            // The reader holds its receiver until it stops, and it stops only after an end.
            let _ = empty_tx.send(vec![0u8; buf_len]);
        }
        let mut allocated = 2 + READ_AHEAD;
        let (mut cur, mut start, mut end, mut base, mut eof) = (first, 0, filled, 0u64, false);
        loop {
            let mut cuts: Vec<Range<usize>> = cut_points(&cur[start..end], params)
                .map(|r| r.start + start..r.end + start)
                .collect();
            let carry = if eof { None } else { cuts.pop() };
            let Some(carry) = carry else {
                pipe.submit(cur, base, cuts);
                return Ok(());
            };
            let (mut next, next_end, next_eof) = full_rx.recv().map_err(|_| {
                io::Error::other("the reading thread stopped before the end of the stream")
            })??;
            let next_start = reserve - carry.len();
            next[next_start..reserve].copy_from_slice(&cur[carry.clone()]);
            // `next[next_start]` is the stream byte `cur[carry.start]` was; the carry ends at
            // `end` >= `reserve`, so this never goes below `base`.
            let next_base = base + (carry.start - next_start) as u64;
            pipe.submit(cur, base, cuts);
            if !next_eof {
                let mut spare = match pipe.spare.pop() {
                    Some(b) => b,
                    None if allocated < max_buffers => {
                        allocated += 1;
                        vec![0u8; buf_len]
                    }
                    None => pipe.wait_for_spare(),
                };
                // The caller's first buffer has no room in front: grown once, when it returns.
                spare.resize(buf_len, 0);
                let _ = empty_tx.send(spare);
            }
            (cur, start, end, base, eof) = (next, next_start, next_end, next_base, next_eof);
        }
    })
}

/// Chunks to hash: `cuts` index into `buf`, whose first byte sits at `base` in the stream.
struct Job<B> {
    seq: usize,
    buf: B,
    base: u64,
    cuts: Vec<Range<usize>>,
}

/// A hashed job, with its buffer handed back for reuse.
struct Done<B> {
    seq: usize,
    chunks: Vec<Chunk>,
    buf: B,
}

fn hash_job<B: AsRef<[u8]>>(job: Job<B>) -> Done<B> {
    let bytes = job.buf.as_ref();
    let chunks = job
        .cuts
        .into_iter()
        .map(|r| Chunk {
            id: ChunkId::of(&bytes[r.clone()]),
            offset: job.base + r.start as u64,
            // A cut is at most `params.max` ≤ 16 MiB long.
            length: r.len() as u32,
        })
        .collect();
    Done {
        seq: job.seq,
        chunks,
        buf: job.buf,
    }
}

/// The calling thread's side of the hashing pool: submits jobs in order, collects results.
struct Pipeline<B> {
    workers: usize,
    jobs: Option<SyncSender<Job<B>>>,
    job_rx: Arc<Mutex<Receiver<Job<B>>>>,
    done_tx: Sender<Done<B>>,
    done_rx: Receiver<Done<B>>,
    results: Vec<Option<Vec<Chunk>>>,
    in_flight: usize,
    /// Buffers handed back by finished jobs.
    spare: Vec<B>,
}

impl<B: AsRef<[u8]> + Send> Pipeline<B> {
    /// Queues a job; when the hashers are all busy and the queue is full, hashes it here instead,
    /// so neither core idles while the other is the bottleneck.
    fn submit(&mut self, buf: B, base: u64, cuts: Vec<Range<usize>>) {
        let seq = self.results.len();
        self.results.push(None);
        self.collect_ready();
        let job = Job {
            seq,
            buf,
            base,
            cuts,
        };
        // `jobs` is only taken in `finish`, after the last submit.
        let tx = self.jobs.as_ref().expect("submit after finish");
        match tx.try_send(job) {
            Ok(()) => self.in_flight += 1,
            Err(TrySendError::Full(job)) => self.record(hash_job(job)),
            Err(TrySendError::Disconnected(_)) => {
                unreachable!("workers live as long as the pipeline")
            }
        }
    }

    /// Blocks until a job finishes and returns its buffer.
    fn wait_for_spare(&mut self) -> B {
        while self.spare.is_empty() {
            assert!(self.in_flight > 0, "no buffer in flight to wait for");
            // A worker holds `done_tx` clones until it exits, and it exits only after `finish`.
            let done = self
                .done_rx
                .recv()
                .expect("hash workers outlive the pipeline");
            self.in_flight -= 1;
            self.record(done);
        }
        self.spare.pop().expect("loop ends when a buffer is spare")
    }

    fn collect_ready(&mut self) {
        while let Ok(done) = self.done_rx.try_recv() {
            self.in_flight -= 1;
            self.record(done);
        }
    }

    fn record(&mut self, done: Done<B>) {
        self.results[done.seq] = Some(done.chunks);
        self.spare.push(done.buf);
    }

    /// Closes the queue, helps hash what is left, and returns all chunks in order.
    fn finish(mut self) -> Vec<Chunk> {
        self.jobs = None;
        work(&self.job_rx, &self.done_tx);
        while self.in_flight > 0 {
            let done = self
                .done_rx
                .recv()
                .expect("hash workers outlive the pipeline");
            self.in_flight -= 1;
            self.record(done);
        }
        self.results
            .into_iter()
            .flat_map(|r| r.expect("every submitted job was recorded"))
            .collect()
    }
}

/// A hashing thread's loop: hash jobs until the queue is closed and empty.
fn work<B: AsRef<[u8]>>(jobs: &Mutex<Receiver<Job<B>>>, done: &Sender<Done<B>>) {
    loop {
        // Poisoning needs a panic in another worker, which `thread::scope` re-raises anyway.
        let job = jobs.lock().expect("hash queue lock poisoned").recv();
        let Ok(job) = job else { return };
        // The receiver lives in the pipeline until all work is collected.
        let _ = done.send(hash_job(job));
    }
}

/// Runs `produce` on this thread with a pool of hashing threads, then returns every chunk
/// submitted, in submission order.
fn with_hash_workers<B, F>(produce: F) -> io::Result<Vec<Chunk>>
where
    B: AsRef<[u8]> + Send,
    F: FnOnce(&mut Pipeline<B>) -> io::Result<()>,
{
    let workers = thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .clamp(1, MAX_HASH_WORKERS);
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job<B>>(workers);
    let (done_tx, done_rx) = mpsc::channel::<Done<B>>();
    let job_rx = Arc::new(Mutex::new(jobs_rx));
    thread::scope(|s| {
        for _ in 0..workers {
            let (jobs, done) = (Arc::clone(&job_rx), done_tx.clone());
            s.spawn(move || work(&jobs, &done));
        }
        let mut pipe = Pipeline {
            workers,
            jobs: Some(jobs_tx),
            job_rx,
            done_tx,
            done_rx,
            results: Vec::new(),
            in_flight: 0,
            spare: Vec::new(),
        };
        // On error, dropping `pipe` closes the queue and the scope joins the workers.
        produce(&mut pipe)?;
        Ok(pipe.finish())
    })
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use proptest::prelude::*;

    use super::*;

    /// Small sizes so short inputs hold many chunks.
    const SMALL: ChunkParams = ChunkParams {
        min: 2 * 1024,
        avg: 8 * 1024,
        max: 32 * 1024,
    };

    /// Tiny buffers and batches so small inputs exercise the carry-over and the worker pool.
    fn tiny_tuning(params: ChunkParams) -> Tuning {
        Tuning {
            buf_len: params.max as usize + 1 + 5_000,
            inline_below: 0,
            batch_bytes: 3 * params.avg as usize,
        }
    }

    /// Deterministic bytes: xorshift64* from `seed`.
    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// The obvious implementation: FastCDC over the whole input, then BLAKE3 each chunk.
    fn reference(data: &[u8], p: ChunkParams) -> Vec<Chunk> {
        cdc(data, p)
            .map(|c| Chunk {
                id: ChunkId(*blake3::hash(&data[c.offset..c.offset + c.length]).as_bytes()),
                offset: c.offset as u64,
                length: c.length as u32,
            })
            .collect()
    }

    /// A reader that hands out at most `step` bytes per call and sometimes is interrupted.
    struct Dribble<'a> {
        data: &'a [u8],
        step: usize,
        calls: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(7) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_mapped_pass_gives_the_same_chunks_and_stops_when_asked() {
        let data = pseudo_random(200_000, 11);
        let tiny = tiny_tuning(SMALL);
        let whole = chunk_bytes_until(&data, SMALL, tiny, |_| false).unwrap();
        assert_eq!(whole, reference(&data, SMALL));
        assert_eq!(
            chunk_mapped(&data, SMALL, |_| false).unwrap(),
            file_chunks(whole.clone())
        );
        // Asked after each batch, with where it ends: the third answer is "stop".
        let asked = std::cell::RefCell::new(Vec::new());
        let stopped = chunk_bytes_until(&data, SMALL, tiny, |end| {
            asked.borrow_mut().push(end);
            asked.borrow().len() == 3
        });
        assert_eq!(stopped, None);
        let asked = asked.into_inner();
        assert_eq!(asked.len(), 3, "no batch is cut after the stop");
        assert!(asked.windows(2).all(|w| w[0] < w[1]), "{asked:?}");
        assert!(asked.iter().all(|e| {
            whole
                .iter()
                .any(|c| c.offset + u64::from(c.length) == *e as u64)
        }));
    }

    fn all_paths_agree(data: &[u8], params: ChunkParams, step: usize) -> Vec<Chunk> {
        let expected = reference(data, params);
        let tiny = tiny_tuning(params);
        assert_eq!(chunk_bytes(data, params), expected, "chunk_bytes");
        assert_eq!(
            chunk_bytes_tuned(data, params, tiny),
            expected,
            "chunk_bytes, tiny batches"
        );
        let streamed = chunk_reader_tuned(
            Dribble {
                data,
                step,
                calls: 0,
            },
            params,
            tiny,
        )
        .unwrap();
        assert_eq!(
            streamed,
            file_chunks(expected.clone()),
            "chunk_reader, tiny buffers"
        );
        assert_eq!(streamed.size, data.len() as u64);
        assert_eq!(
            chunk_reader(data, params).unwrap().chunks,
            expected,
            "chunk_reader"
        );
        expected
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn streaming_with_carry_over_cuts_exactly_where_whole_input_chunking_does(
            seed in any::<u64>(),
            len in 0usize..400_000,
            step in 1usize..100_000,
            min_kib in 1u32..4,
            avg_mul in 1u32..4,
            max_mul in 1u32..4,
        ) {
            println!("seed {seed} len {len} step {step}");
            let min = min_kib * 1024;
            let avg = min * avg_mul;
            let params = ChunkParams { min, avg, max: avg * max_mul };
            all_paths_agree(&pseudo_random(len, seed), params, step);
        }
    }

    #[test]
    fn low_entropy_input_with_repeats_streams_like_whole_input_chunking() {
        let seed = 7;
        println!("seed {seed}");
        // Runs of zeros between random stretches: max-length cuts next to content-defined ones.
        let mut data = pseudo_random(300_000, seed);
        data[50_000..180_000].fill(0);
        all_paths_agree(&data, SMALL, 9_999);
    }

    #[test]
    fn empty_input_has_no_chunks_and_the_empty_manifest_id() {
        let fc = all_paths_agree(&[], SMALL, 1);
        assert!(fc.is_empty());
        let streamed = chunk_reader(io::empty(), ChunkParams::DEFAULT).unwrap();
        assert_eq!(streamed.size, 0);
        assert_eq!(streamed.content_id, content_id_of(std::iter::empty()));
    }

    #[test]
    fn one_byte_is_one_chunk_named_by_its_blake3_hash() {
        let chunks = all_paths_agree(&[42], ChunkParams::DEFAULT, 1);
        assert_eq!(
            chunks,
            vec![Chunk {
                id: ChunkId::of(&[42]),
                offset: 0,
                length: 1
            }]
        );
    }

    #[test]
    fn input_of_exactly_min_bytes_is_one_chunk() {
        let data = pseudo_random(SMALL.min as usize, 3);
        let chunks = all_paths_agree(&data, SMALL, 500);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].length, SMALL.min);
    }

    #[test]
    fn input_shorter_than_min_is_one_chunk() {
        let data = pseudo_random(SMALL.min as usize - 1, 4);
        assert_eq!(all_paths_agree(&data, SMALL, 100).len(), 1);
    }

    #[test]
    fn all_zeros_is_cut_at_max_with_a_shorter_tail() {
        let data = vec![0u8; 10 << 20];
        let mb = 1u32 << 20;
        let lengths: Vec<u32> = all_paths_agree(&data, ChunkParams::DEFAULT, 1 << 20)
            .iter()
            .map(|c| c.length)
            .collect();
        assert_eq!(lengths, vec![4 * mb, 4 * mb, 2 * mb]);
        let small: Vec<u32> = all_paths_agree(&data[..100_000], SMALL, 7_000)
            .iter()
            .map(|c| c.length)
            .collect();
        assert_eq!(
            small,
            vec![SMALL.max, SMALL.max, SMALL.max, 100_000 - 3 * SMALL.max]
        );
    }

    #[test]
    fn a_read_error_mid_stream_is_returned() {
        struct FailAfter(usize);
        impl Read for FailAfter {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = self.0.min(buf.len()).min(10_000);
                buf[..n].fill(1);
                self.0 -= n;
                Ok(n)
            }
        }
        let err = chunk_reader_tuned(FailAfter(500_000), SMALL, tiny_tuning(SMALL)).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        assert!(chunk_reader(FailAfter(20 << 20), ChunkParams::DEFAULT).is_err());
    }

    #[test]
    fn invalid_params_are_refused_by_chunk_reader() {
        let odd = ChunkParams {
            min: 1001,
            avg: 4096,
            max: 16384,
        };
        let err = chunk_reader(&[1u8, 2, 3][..], odd).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            check_params(ChunkParams {
                min: 8192,
                avg: 4096,
                max: 16384
            })
            .is_err()
        );
        assert!(check_params(ChunkParams::DEFAULT).is_ok());
    }

    /// The golden record: params, size, content id, then one `offset length id` line per chunk.
    fn golden_text(name: &str, data: &[u8], params: ChunkParams) -> String {
        let fc = chunk_reader(data, params).unwrap();
        assert_eq!(
            fc.chunks,
            reference(data, params),
            "{name}: pipeline disagrees with the reference"
        );
        let mut out = format!(
            "# {name}: xorshift64* seed 2026, {} bytes, params {}/{}/{}\nsize {}\ncontent {}\n",
            data.len(),
            params.min,
            params.avg,
            params.max,
            fc.size,
            fc.content_id.to_hex()
        );
        for c in &fc.chunks {
            writeln!(out, "{} {} {}", c.offset, c.length, c.id.to_hex()).unwrap();
        }
        out
    }

    /// Boundaries and ids pinned in `daemon/tests/golden/chunker.txt`; a change there changes
    /// every chunk id in every store. Regenerate deliberately with `CAIRN_BLESS=1`.
    #[test]
    fn boundaries_and_ids_of_a_fixed_input_match_the_golden_file() {
        let data = pseudo_random(24 << 20, 2026);
        let actual = golden_text("default", &data, ChunkParams::DEFAULT)
            + &golden_text("small", &data[..1 << 20], SMALL);
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/chunker.txt");
        if std::env::var_os("CAIRN_BLESS").is_some() {
            std::fs::write(path, &actual).unwrap();
        }
        let expected = include_str!("../tests/golden/chunker.txt");
        assert!(
            actual == expected,
            "chunker output differs from {path}; if intended, rerun with CAIRN_BLESS=1"
        );
    }
}
