//! The pull's fetch plan, pure: which files go together, and which byte ranges of which stored
//! objects to GET for them.
//!
//! Small files' chunks rest side by side in packs, so a group of files is fetched by object, not
//! by file: every chunk the group needs is listed with where it rests and where it goes, the list
//! is sorted by (object, offset), and neighbours are merged into one ranged GET ("span") that may
//! cover many files and skip small gaps. Same input, same plan.

use std::ops::Range;

use cairn_proto::ChunkId;

/// One chunk a file needs: where its bytes rest and where they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Index of the file in its group.
    pub file: usize,
    /// Offset of the chunk in the file.
    pub at: u64,
    pub id: ChunkId,
    /// Index of the stored object (into the GetManifests answer's objects).
    pub object: u32,
    /// Offset of the chunk in the object.
    pub offset: u64,
    pub length: u32,
}

impl Piece {
    fn end(&self) -> u64 {
        self.offset + u64::from(self.length)
    }
}

/// One ranged GET: bytes `offset .. offset + length` of `object`, and the pieces inside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub object: u32,
    pub offset: u64,
    pub length: u64,
    /// Sorted by offset in the object: the body is placed as it streams in, in that order.
    pub pieces: Vec<Piece>,
}

/// Merges pieces into spans: pieces of one object whose gap is at most `max_gap` bytes share a
/// span while it stays within `max_span` bytes (a single larger piece is a span of its own).
/// The same chunk wanted twice (two files, or twice in one file) is fetched once.
pub fn spans(mut pieces: Vec<Piece>, max_span: u64, max_gap: u64) -> Vec<Span> {
    pieces.sort_by_key(|p| (p.object, p.offset, p.file, p.at));
    let mut out: Vec<Span> = Vec::new();
    for p in pieces {
        if let Some(s) = out.last_mut() {
            let s_end = s.offset + s.length;
            let end = p.end().max(s_end);
            if s.object == p.object
                && p.offset <= s_end.saturating_add(max_gap)
                && end - s.offset <= max_span
            {
                s.length = end - s.offset;
                s.pieces.push(p);
                continue;
            }
        }
        out.push(Span {
            object: p.object,
            offset: p.offset,
            length: u64::from(p.length),
            pieces: vec![p],
        });
    }
    out
}

/// Splits files (given by size, in fetch order) into consecutive groups of at most `max_files`
/// files and at most `max_bytes` bytes; a file larger than `max_bytes` is a group of its own.
pub fn groups(sizes: &[u64], max_files: usize, max_bytes: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start >= max_files || bytes + size > max_bytes) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(file: usize, object: u32, offset: u64, length: u32) -> Piece {
        Piece {
            file,
            at: 0,
            id: ChunkId::from_slice(&[file as u8; 32]).unwrap(),
            object,
            offset,
            length,
        }
    }

    fn shape(s: &[Span]) -> Vec<(u32, u64, u64, usize)> {
        s.iter()
            .map(|s| (s.object, s.offset, s.length, s.pieces.len()))
            .collect()
    }

    #[test]
    fn neighbours_in_one_pack_share_a_get_across_files() {
        // Files 0..3 rest in pack 0 in another order than the files'; file 3 is in pack 1.
        let p = vec![
            piece(0, 0, 200, 100),
            piece(1, 0, 0, 100),
            piece(2, 0, 100, 100),
            piece(3, 1, 0, 50),
        ];
        let s = spans(p, 1 << 20, 0);
        assert_eq!(shape(&s), vec![(0, 0, 300, 3), (1, 0, 50, 1)]);
        // In the order of the bytes in the pack, which the GET streams.
        let order: Vec<(usize, u64)> = s[0].pieces.iter().map(|p| (p.file, p.offset)).collect();
        assert_eq!(order, vec![(1, 0), (2, 100), (0, 200)]);
    }

    #[test]
    fn small_gaps_are_read_through_and_large_ones_split() {
        let p = vec![
            piece(0, 0, 0, 10),
            piece(1, 0, 30, 10),
            piece(2, 0, 100, 10),
        ];
        assert_eq!(
            shape(&spans(p.clone(), 1 << 20, 20)),
            vec![(0, 0, 40, 2), (0, 100, 10, 1)]
        );
        assert_eq!(shape(&spans(p, 1 << 20, 60)), vec![(0, 0, 110, 3)]);
    }

    #[test]
    fn a_span_stays_within_its_size_limit_but_a_big_piece_is_not_cut() {
        let p = vec![
            piece(0, 0, 0, 60),
            piece(1, 0, 60, 60),
            piece(2, 0, 120, 500),
        ];
        assert_eq!(
            shape(&spans(p, 100, 0)),
            vec![(0, 0, 60, 1), (0, 60, 60, 1), (0, 120, 500, 1)]
        );
    }

    #[test]
    fn a_chunk_wanted_twice_is_fetched_once() {
        let p = vec![piece(0, 0, 0, 10), piece(1, 0, 0, 10), piece(2, 0, 10, 5)];
        let s = spans(p, 1 << 20, 0);
        assert_eq!(shape(&s), vec![(0, 0, 15, 3)]);
    }

    #[test]
    fn the_plan_does_not_depend_on_input_order() {
        let mut p = vec![
            piece(0, 1, 0, 10),
            piece(1, 0, 0, 10),
            piece(2, 0, 10, 10),
            piece(3, 2, 5, 1),
        ];
        let a = spans(p.clone(), 1 << 20, 0);
        p.reverse();
        assert_eq!(a, spans(p, 1 << 20, 0));
        assert!(spans(Vec::new(), 1, 0).is_empty());
    }

    #[test]
    fn groups_respect_file_and_byte_limits() {
        assert_eq!(groups(&[1, 1, 1, 1, 1], 2, 100), vec![0..2, 2..4, 4..5]);
        assert_eq!(
            groups(&[60, 50, 10, 300, 5], 10, 100),
            vec![0..1, 1..3, 3..4, 4..5]
        );
        assert_eq!(groups(&[0, 0, 0], 10, 0), vec![0..3]);
        assert!(groups(&[], 10, 10).is_empty());
    }
}
