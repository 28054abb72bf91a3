//! [`Tablets`]: a table's tablets in key order, as a persistent vector of shared
//! descriptors. A copy costs O(1) and a change of one tablet O(log n) (it copies the
//! path to that tablet and the one descriptor), however many tablets the table has;
//! a table of a few tablets holds them inline, without an allocation of its own.

use super::TabletDesc;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// A table's tablets, by start key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tablets(imbl::Vector<Arc<TabletDesc>>);

impl Tablets {
    /// No tablets.
    pub fn new() -> Tablets {
        Tablets::default()
    }

    /// One tablet.
    pub fn unit(tablet: TabletDesc) -> Tablets {
        Tablets(imbl::Vector::unit(Arc::new(tablet)))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tablets in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &TabletDesc> + '_ {
        self.0.iter().map(|t| t.as_ref())
    }

    /// The tablet at `index`.
    pub fn get(&self, index: usize) -> Option<&TabletDesc> {
        self.0.get(index).map(|t| t.as_ref())
    }

    /// The tablet at `index`, to change (copied first when shared).
    pub fn get_mut(&mut self, index: usize) -> Option<&mut TabletDesc> {
        self.0.get_mut(index).map(Arc::make_mut)
    }

    /// The first tablet.
    pub fn front(&self) -> Option<&TabletDesc> {
        self.0.front().map(|t| t.as_ref())
    }

    /// Every tablet, to change (each copied first when shared: for changes that
    /// touch them all).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut TabletDesc> + '_ {
        self.0.iter_mut().map(Arc::make_mut)
    }

    /// Binary search by `f` (the tablets are in key order).
    pub fn binary_search_by(
        &self,
        mut f: impl FnMut(&TabletDesc) -> std::cmp::Ordering,
    ) -> Result<usize, usize> {
        self.0.binary_search_by(|t| f(t))
    }

    /// Inserts `tablet` at `index`.
    pub fn insert(&mut self, index: usize, tablet: TabletDesc) {
        self.0.insert(index, Arc::new(tablet));
    }

    /// Removes the tablet at `index`.
    pub fn remove(&mut self, index: usize) -> TabletDesc {
        Arc::unwrap_or_clone(self.0.remove(index))
    }

    /// Appends `tablet`.
    pub fn push_back(&mut self, tablet: TabletDesc) {
        self.0.push_back(Arc::new(tablet));
    }
}

impl std::ops::Index<usize> for Tablets {
    type Output = TabletDesc;

    fn index(&self, index: usize) -> &TabletDesc {
        &self.0[index]
    }
}

impl std::ops::IndexMut<usize> for Tablets {
    fn index_mut(&mut self, index: usize) -> &mut TabletDesc {
        Arc::make_mut(&mut self.0[index])
    }
}

impl FromIterator<TabletDesc> for Tablets {
    fn from_iter<I: IntoIterator<Item = TabletDesc>>(iter: I) -> Tablets {
        Tablets(iter.into_iter().map(Arc::new).collect())
    }
}

impl<'a> IntoIterator for &'a Tablets {
    type Item = &'a TabletDesc;
    type IntoIter = std::iter::Map<
        imbl::vector::Iter<'a, Arc<TabletDesc>, imbl::shared_ptr::DefaultSharedPtr>,
        fn(&'a Arc<TabletDesc>) -> &'a TabletDesc,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|t| t.as_ref())
    }
}

impl std::fmt::Debug for Tablets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Tablets {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Tablets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tablets, D::Error> {
        Ok(Vec::<TabletDesc>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::tablet;

    #[test]
    fn a_change_of_one_tablet_leaves_a_copy_as_it_was() {
        let a: Tablets = (1..=100).map(|i| tablet(i, b"", None)).collect();
        let mut b = a.clone();
        b[40].generation = 9;
        b.insert(41, tablet(1000, b"", None));
        assert_eq!(
            (a[40].generation, a.len()),
            (1, 100),
            "the copy is unchanged"
        );
        assert_eq!((b[40].generation, b[41].id.0, b.len()), (9, 1000, 101));
        assert!(
            std::ptr::eq(a.get(0).unwrap(), b.get(0).unwrap()),
            "untouched tablets are shared"
        );
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Tablets>(&json).unwrap(), b);
    }
}
