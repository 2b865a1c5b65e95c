//! Half-open ranges `[from, to)` of ordered points (hours, integer keys),
//! kept sorted and merged: the one type for pending hours, a model's key
//! ranges, a ledger's hours and a load's scope. Adjacent ranges merge, so
//! equal sets have equal values.

use std::fmt;

/// A set of points as sorted, disjoint, non-adjacent `[from, to)` ranges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ranges<K> {
    items: Vec<(K, K)>,
}

impl<K> Default for Ranges<K> {
    fn default() -> Self {
        Ranges { items: Vec::new() }
    }
}

/// A point type ranges can hold: ordered, with a successor (the next hour,
/// the next key).
pub trait Point: Copy + Ord {
    fn next(self) -> Self;
}

impl Point for i64 {
    fn next(self) -> i64 {
        self + 1
    }
}

impl<K: Point> Ranges<K> {
    pub fn new() -> Ranges<K> {
        Ranges::default()
    }

    /// One range; empty when `from >= to`.
    pub fn one(from: K, to: K) -> Ranges<K> {
        let mut r = Ranges::new();
        r.add(from, to);
        r
    }

    /// The ranges of the points `points` (any order, repeats allowed).
    pub fn of_points(points: impl IntoIterator<Item = K>) -> Ranges<K> {
        let mut r = Ranges::new();
        for p in points {
            r.add(p, p.next());
        }
        r
    }

    /// Adds `[from, to)`; nothing when it is empty.
    pub fn add(&mut self, from: K, to: K) {
        if from >= to {
            return;
        }
        let at = self.items.partition_point(|r| r.1 < from);
        let mut end = at;
        let (mut a, mut b) = (from, to);
        while end < self.items.len() && self.items[end].0 <= b {
            a = a.min(self.items[end].0);
            b = b.max(self.items[end].1);
            end += 1;
        }
        self.items.splice(at..end, [(a, b)]);
    }

    /// Adds every range of `other`.
    pub fn extend(&mut self, other: &Ranges<K>) {
        for &(a, b) in &other.items {
            self.add(a, b);
        }
    }

    /// Removes `[from, to)`.
    pub fn remove(&mut self, from: K, to: K) {
        if from >= to {
            return;
        }
        let mut out = Vec::with_capacity(self.items.len() + 1);
        for &(a, b) in &self.items {
            if b <= from || to <= a {
                out.push((a, b));
                continue;
            }
            if a < from {
                out.push((a, from));
            }
            if to < b {
                out.push((to, b));
            }
        }
        self.items = out;
    }

    /// Removes the point `p`.
    pub fn remove_point(&mut self, p: K) {
        self.remove(p, p.next());
    }

    pub fn contains(&self, p: K) -> bool {
        let at = self.items.partition_point(|r| r.1 <= p);
        self.items.get(at).is_some_and(|r| r.0 <= p)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The ranges, in order, as `(from, to)`.
    pub fn iter(&self) -> impl Iterator<Item = (K, K)> + '_ {
        self.items.iter().copied()
    }

    /// The number of ranges.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The first point and the end of the last range.
    pub fn span(&self) -> Option<(K, K)> {
        Some((self.items.first()?.0, self.items.last()?.1))
    }

    /// Every point, in order.
    pub fn points(&self) -> impl Iterator<Item = K> + '_ {
        self.items.iter().flat_map(|&(a, b)| {
            std::iter::successors(Some(a), move |p| Some(p.next()).filter(|n| *n < b))
        })
    }

    /// As people read runs of points: `a..b` for a run whose last point is
    /// `b`, `a` alone for a single point, comma-separated.
    pub fn runs(&self) -> Runs<'_, K> {
        Runs(self)
    }
}

impl<K: Point> FromIterator<(K, K)> for Ranges<K> {
    fn from_iter<I: IntoIterator<Item = (K, K)>>(iter: I) -> Ranges<K> {
        let mut r = Ranges::new();
        for (a, b) in iter {
            r.add(a, b);
        }
        r
    }
}

/// `[a, b), [c, d)`: the ranges as half-open intervals.
impl<K: Point + fmt::Display> fmt::Display for Ranges<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "[{a}, {b})")?;
        }
        Ok(())
    }
}

/// See [`Ranges::runs`].
pub struct Runs<'a, K>(&'a Ranges<K>);

impl<K: Point + fmt::Display> fmt::Display for Runs<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if a.next() == b {
                write!(f, "{a}")?;
            } else {
                // The last point: the one whose successor is `b`.
                let last = std::iter::successors(Some(a), |p| Some(p.next()))
                    .take_while(|p| p.next() <= b)
                    .last()
                    .unwrap_or(a);
                write!(f, "{a}..{last}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(items: &[(i64, i64)]) -> Ranges<i64> {
        items.iter().copied().collect()
    }

    #[test]
    fn adding_merges_overlapping_and_adjacent_ranges() {
        let mut x = r(&[(10, 20), (30, 40)]);
        x.add(20, 25);
        assert_eq!(x.iter().collect::<Vec<_>>(), [(10, 25), (30, 40)]);
        x.add(12, 14);
        assert_eq!(x, r(&[(10, 25), (30, 40)]));
        x.add(0, 5);
        x.add(5, 10);
        assert_eq!(x, r(&[(0, 25), (30, 40)]));
        x.add(24, 31);
        assert_eq!(x, r(&[(0, 40)]));
        x.add(50, 50);
        assert_eq!(x.len(), 1);
        assert_eq!(r(&[(5, 6), (1, 2), (3, 4), (2, 3)]), r(&[(1, 4), (5, 6)]));
    }

    #[test]
    fn removing_splits_and_trims() {
        let mut x = r(&[(0, 10), (20, 30)]);
        x.remove_point(5);
        assert_eq!(x, r(&[(0, 5), (6, 10), (20, 30)]));
        x.remove(8, 25);
        assert_eq!(x, r(&[(0, 5), (6, 8), (25, 30)]));
        x.remove_point(0);
        x.remove(29, 40);
        assert_eq!(x, r(&[(1, 5), (6, 8), (25, 29)]));
        x.remove(-10, 100);
        assert!(x.is_empty());
    }

    #[test]
    fn membership_points_and_display() {
        let x = Ranges::of_points([7, 3, 4, 5, 9, 4]);
        assert_eq!(x, r(&[(3, 6), (7, 8), (9, 10)]));
        assert!(x.contains(3) && x.contains(5) && !x.contains(6) && x.contains(9));
        assert!(!x.contains(2) && !x.contains(10));
        assert_eq!(x.points().collect::<Vec<_>>(), [3, 4, 5, 7, 9]);
        assert_eq!(x.span(), Some((3, 10)));
        assert_eq!(x.to_string(), "[3, 6), [7, 8), [9, 10)");
        assert_eq!(x.runs().to_string(), "3..5, 7, 9");
        assert_eq!(Ranges::<i64>::new().to_string(), "");
    }
}
