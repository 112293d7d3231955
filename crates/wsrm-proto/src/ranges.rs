//! A set of message numbers kept as sorted, disjoint, non-adjacent inclusive ranges — the
//! content of a `SequenceAcknowledgement`.

/// WCF's cap on the number of acknowledgement ranges a destination keeps
/// (`ReliableMessagingConstants.MaxSequenceRanges`).
pub const MAX_SEQUENCE_RANGES: usize = 128;

/// Whether `ranges` are already in the form a [`RangeSet`] keeps them: each `lower ≤ upper`,
/// ascending, disjoint and non-adjacent. Acknowledgements written by WCF and by this engine are;
/// such a slice can be used as a set without building one.
pub(crate) fn is_canonical(ranges: &[(u64, u64)]) -> bool {
    ranges.iter().all(|&(l, u)| l <= u)
        && ranges.windows(2).all(|w| w[0].1.saturating_add(1) < w[1].0)
}

/// [`RangeSet::contains_range`] over a canonical slice (see [`is_canonical`]).
pub(crate) fn slice_contains_range(ranges: &[(u64, u64)], lower: u64, upper: u64) -> bool {
    if lower > upper {
        return true;
    }
    let i = ranges.partition_point(|&(_, u)| u < lower);
    matches!(ranges.get(i), Some(&(l, u)) if l <= lower && u >= upper)
}

/// Sorted, disjoint, non-adjacent inclusive ranges of message numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        RangeSet { ranges: Vec::new() }
    }

    /// Builds a set from arbitrary (possibly overlapping, unsorted) inclusive ranges; ranges with
    /// `lower > upper` are ignored.
    pub fn from_ranges(ranges: &[(u64, u64)]) -> Self {
        let mut s = RangeSet::new();
        for &(l, u) in ranges {
            s.insert_range(l, u);
        }
        s
    }

    /// The ranges, ascending.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Number of disjoint ranges.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Largest number in the set.
    pub fn max(&self) -> Option<u64> {
        self.ranges.last().map(|r| r.1)
    }

    /// Upper end of the range starting at 1 (0 when 1 is absent): everything `1..=n` is present.
    pub fn contiguous_prefix(&self) -> u64 {
        match self.ranges.first() {
            Some(&(1, u)) => u,
            _ => 0,
        }
    }

    /// Total count of numbers in the set (saturating).
    pub fn count(&self) -> u64 {
        self.ranges
            .iter()
            .fold(0u64, |a, &(l, u)| a.saturating_add(u - l + 1))
    }

    /// Index of the first range whose upper end is ≥ `n`.
    fn lower_bound(&self, n: u64) -> usize {
        self.ranges.partition_point(|&(_, u)| u < n)
    }

    /// Whether `n` is in the set.
    pub fn contains(&self, n: u64) -> bool {
        let i = self.lower_bound(n);
        matches!(self.ranges.get(i), Some(&(l, _)) if l <= n)
    }

    /// Whether every number of `lower..=upper` is in the set.
    pub fn contains_range(&self, lower: u64, upper: u64) -> bool {
        slice_contains_range(&self.ranges, lower, upper)
    }

    /// How many ranges the set would have after inserting `n`.
    pub fn range_count_after_insert(&self, n: u64) -> usize {
        if self.contains(n) {
            return self.ranges.len();
        }
        let i = self.lower_bound(n);
        let joins_next = matches!(self.ranges.get(i), Some(&(l, _)) if n.checked_add(1) == Some(l));
        let joins_prev =
            i > 0 && matches!(self.ranges.get(i - 1), Some(&(_, u)) if u.checked_add(1) == Some(n));
        match (joins_prev, joins_next) {
            (true, true) => self.ranges.len() - 1,
            (false, false) => self.ranges.len() + 1,
            _ => self.ranges.len(),
        }
    }

    /// Inserts `n`; returns whether it was new. One search, then the range before or after is
    /// extended (the common case: the next number in order), two ranges are joined, or a range
    /// is added.
    pub fn insert(&mut self, n: u64) -> bool {
        self.insert_within(n, usize::MAX)
    }

    /// Inserts `n` only if the set then has at most `cap` ranges; returns whether it was
    /// inserted (false when already present or when the cap would be exceeded). One search,
    /// as [`RangeSet::insert`].
    pub fn insert_capped(&mut self, n: u64, cap: usize) -> bool {
        self.insert_within(n, cap)
    }

    /// Where `n` lies: the index of the first range whose upper end is ≥ `n`. While the set
    /// is unchanged, [`RangeSet::contains_at`] and [`RangeSet::insert_capped_at`] take it
    /// instead of searching again (the destination checks for a duplicate, then inserts).
    pub(crate) fn position(&self, n: u64) -> usize {
        self.lower_bound(n)
    }

    /// [`RangeSet::contains`] with `i` from [`RangeSet::position`]`(n)`.
    #[inline]
    pub(crate) fn contains_at(&self, i: usize, n: u64) -> bool {
        matches!(self.ranges.get(i), Some(&(l, u)) if l <= n && n <= u)
    }

    /// [`RangeSet::insert_capped`] with `i` from [`RangeSet::position`]`(n)` (searched again
    /// if it is not where `n` lies).
    pub(crate) fn insert_capped_at(&mut self, i: usize, n: u64, cap: usize) -> bool {
        let right = i <= self.ranges.len()
            && (i == 0 || self.ranges.get(i - 1).is_some_and(|&(_, u)| u < n))
            && self.ranges.get(i).is_none_or(|&(_, u)| u >= n);
        let i = if right { i } else { self.lower_bound(n) };
        self.insert_within_at(i, n, cap)
    }

    fn insert_within(&mut self, n: u64, cap: usize) -> bool {
        let i = self.lower_bound(n);
        self.insert_within_at(i, n, cap)
    }

    /// [`RangeSet::insert_within`] with `i` the index of the first range whose upper end is
    /// ≥ `n`.
    #[inline]
    fn insert_within_at(&mut self, i: usize, n: u64, cap: usize) -> bool {
        let next = self.ranges.get(i).copied();
        if next.is_some_and(|(l, _)| l <= n) {
            return false;
        }
        let joins_prev =
            i > 0 && matches!(self.ranges.get(i - 1), Some(&(_, u)) if u.checked_add(1) == Some(n));
        let joins_next = next.is_some_and(|(l, _)| n.checked_add(1) == Some(l));
        // Ranges after the insert: one more, as many (one extended) or one fewer (two joined).
        let after = (self.ranges.len() + 1)
            .saturating_sub(usize::from(joins_prev) + usize::from(joins_next));
        if after > cap {
            return false;
        }
        match (joins_prev, joins_next, next) {
            (true, true, Some((_, u))) => {
                if let Some(prev) = self.ranges.get_mut(i - 1) {
                    prev.1 = u;
                }
                self.ranges.remove(i);
            }
            (true, _, _) => {
                if let Some(prev) = self.ranges.get_mut(i - 1) {
                    prev.1 = n;
                }
            }
            (false, true, _) => {
                if let Some(r) = self.ranges.get_mut(i) {
                    r.0 = n;
                }
            }
            (false, false, _) => self.ranges.insert(i, (n, n)),
        }
        true
    }

    /// Inserts every number of `lower..=upper` (no-op when `lower > upper`).
    pub fn insert_range(&mut self, lower: u64, upper: u64) {
        if lower > upper {
            return;
        }
        // At the end (the common case: numbers mostly grow): a push, or the last range
        // extended (it is the only one `lower..=upper` can touch).
        match self.ranges.last_mut() {
            None => {
                self.ranges.push((lower, upper));
                return;
            }
            Some(last) if lower > last.1.saturating_add(1) => {
                self.ranges.push((lower, upper));
                return;
            }
            Some(last) if lower >= last.0 => {
                last.1 = last.1.max(upper);
                return;
            }
            Some(_) => {}
        }
        // First range that could touch [lower, upper]: upper end ≥ lower − 1.
        let start = self
            .ranges
            .partition_point(|&(_, u)| u.saturating_add(1) < lower);
        let mut end = start;
        let mut lo = lower;
        let mut hi = upper;
        while let Some(&(l, u)) = self.ranges.get(end) {
            if l > hi.saturating_add(1) {
                break;
            }
            lo = lo.min(l);
            hi = hi.max(u);
            end += 1;
        }
        // Ranges start..end merge into one (none: a new range at `start`).
        if end == start {
            self.ranges.insert(start, (lo, hi));
        } else {
            if let Some(r) = self.ranges.get_mut(start) {
                *r = (lo, hi);
            }
            if end > start + 1 {
                self.ranges.drain(start + 1..end);
            }
        }
    }

    /// Whether every number in `other` is also in `self`.
    pub fn is_superset(&self, other: &RangeSet) -> bool {
        other.ranges.iter().all(|&(l, u)| self.contains_range(l, u))
    }

    /// Removes every number ≤ `n`.
    pub fn remove_through(&mut self, n: u64) {
        if self.ranges.last().is_some_and(|&(_, u)| u <= n) {
            self.ranges.clear();
            return;
        }
        let i = self.lower_bound(n.saturating_add(1));
        self.ranges.drain(..i);
        if let Some(first) = self.ranges.first_mut() {
            if first.0 <= n {
                first.0 = n + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn insert_merges_adjacent() {
        let mut s = RangeSet::new();
        assert!(s.insert(3));
        assert!(s.insert(1));
        assert_eq!(s.ranges(), &[(1, 1), (3, 3)]);
        assert!(s.insert(2));
        assert_eq!(s.ranges(), &[(1, 3)]);
        assert!(!s.insert(2));
        assert_eq!(s.contiguous_prefix(), 3);
    }

    #[test]
    fn cap_of_128_ranges_refuses_a_129th() {
        let mut s = RangeSet::new();
        for i in 0..128u64 {
            assert!(s.insert_capped(i * 2 + 1, MAX_SEQUENCE_RANGES));
        }
        assert_eq!(s.range_count(), 128);
        // A new isolated number would make 129 ranges.
        assert!(!s.insert_capped(1000, MAX_SEQUENCE_RANGES));
        // Filling a gap merges two ranges: allowed.
        assert!(s.insert_capped(2, MAX_SEQUENCE_RANGES));
        assert_eq!(s.range_count(), 127);
        // Extending a range keeps the count: allowed.
        assert!(s.insert_capped(256, MAX_SEQUENCE_RANGES));
        assert_eq!(s.range_count(), 127);
    }

    #[test]
    fn extremes_do_not_overflow() {
        let mut s = RangeSet::new();
        assert!(s.insert(u64::MAX));
        assert!(s.insert(u64::MAX - 1));
        assert!(!s.insert(u64::MAX));
        s.insert_range(0, 0);
        assert_eq!(s.ranges(), &[(0, 0), (u64::MAX - 1, u64::MAX)]);
        assert_eq!(s.range_count_after_insert(u64::MAX - 2), 2);
        s.remove_through(u64::MAX - 1);
        assert_eq!(s.ranges(), &[(u64::MAX, u64::MAX)]);
    }

    proptest! {
        #[test]
        fn prop_matches_btreeset(ops in proptest::collection::vec((1u64..200, 0u64..5), 0..200)) {
            let mut s = RangeSet::new();
            let mut model = BTreeSet::new();
            for (n, len) in ops {
                s.insert_range(n, n + len);
                for k in n..=n + len { model.insert(k); }
                // invariants: sorted, disjoint, non-adjacent
                for w in s.ranges().windows(2) {
                    prop_assert!(w[0].1 + 1 < w[1].0);
                }
                for r in s.ranges() { prop_assert!(r.0 <= r.1); }
            }
            for k in 0..220u64 {
                prop_assert_eq!(s.contains(k), model.contains(&k));
            }
            prop_assert_eq!(s.count(), model.len() as u64);
        }

        #[test]
        fn prop_insert_matches_btreeset(xs in proptest::collection::vec(0u64..120, 0..300)) {
            let mut s = RangeSet::new();
            let mut model = BTreeSet::new();
            for x in xs {
                prop_assert_eq!(s.insert(x), model.insert(x));
                let mut expect = RangeSet::new();
                for &k in &model {
                    expect.insert_range(k, k);
                }
                prop_assert_eq!(&s, &expect);
            }
        }

        #[test]
        fn prop_capped_insert_never_exceeds_cap(xs in proptest::collection::vec(1u64..2000, 0..600), cap in 1usize..130) {
            let mut s = RangeSet::new();
            let mut model = BTreeSet::new();
            for x in xs {
                let before = s.range_count_after_insert(x);
                let inserted = s.insert_capped(x, cap);
                if inserted { model.insert(x); }
                prop_assert!(s.range_count() <= cap);
                prop_assert_eq!(inserted, before <= cap && !model.contains(&x) || inserted);
                prop_assert_eq!(s.contains(x), model.contains(&x));
            }
            prop_assert_eq!(s.count(), model.len() as u64);
        }

        #[test]
        fn prop_position_then_insert_is_insert_capped(
            rs in proptest::collection::vec((1u64..60, 0u64..3), 0..20),
            x in 0u64..64,
            wrong in 0usize..4,
            cap in 0usize..12,
        ) {
            let s = RangeSet::from_ranges(&rs.iter().map(|&(l, n)| (l, l + n)).collect::<Vec<_>>());
            let i = s.position(x);
            prop_assert_eq!(s.contains_at(i, x), s.contains(x));
            let mut t = s.clone();
            let mut u = s.clone();
            prop_assert_eq!(t.insert_capped_at(i, x, cap), u.insert_capped(x, cap));
            prop_assert_eq!(&t, &u);
            // A wrong position is searched again.
            let mut t = s.clone();
            let mut u = s.clone();
            prop_assert_eq!(t.insert_capped_at(i.wrapping_add(wrong) % (s.range_count() + 2), x, cap), u.insert_capped(x, cap));
            prop_assert_eq!(t, u);
        }

        #[test]
        fn prop_insert_capped_is_count_then_insert(
            rs in proptest::collection::vec((1u64..60, 0u64..3), 0..20),
            x in 0u64..64,
            cap in 0usize..12,
        ) {
            let s = RangeSet::from_ranges(&rs.iter().map(|&(l, n)| (l, l + n)).collect::<Vec<_>>());
            // The rule as it was written before: present, or too many ranges after, refuses.
            let expect = !s.contains(x) && s.range_count_after_insert(x) <= cap;
            let mut t = s.clone();
            prop_assert_eq!(t.insert_capped(x, cap), expect);
            let mut u = s.clone();
            if expect {
                u.insert_range(x, x);
            }
            prop_assert_eq!(t, u);
        }

        #[test]
        fn prop_from_ranges_superset_and_remove(rs in proptest::collection::vec((1u64..100, 1u64..100), 0..30), cut in 0u64..120) {
            let s = RangeSet::from_ranges(&rs);
            for &(l, u) in &rs {
                if l <= u { prop_assert!(s.contains_range(l, u)); }
            }
            let mut t = s.clone();
            prop_assert!(s.is_superset(&t));
            t.remove_through(cut);
            prop_assert!(s.is_superset(&t));
            for k in 0..=cut { prop_assert!(!t.contains(k)); }
            for k in cut+1..120 { prop_assert_eq!(t.contains(k), s.contains(k)); }
        }
    }
}
