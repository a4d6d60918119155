//! "Is step `j` upstream of step `i`?" — reachability through `needs` — for every reference an
//! expression makes, without building each step's set of ancestors (quadratic in a chain).
//!
//! The graph is condensed to its strongly connected components (Tarjan's order lists a component after
//! every component it reaches). Most questions are answered in constant time: a direct need, a component
//! found later or at a higher level (longest path to a step with no needs) than the asker, which cannot be
//! upstream, or one on the asker's path through its deepest need, which is. The rest are answered together
//! by propagating bit sets of 64 targets at a time over the components in order: `O((n + m) · ⌈t / 64⌉)` for
//! `t` such targets, which is `O(n + m)` for the shapes playbooks have (chains, fans, trees of chains).

use std::collections::HashMap;

/// Answers reachability questions over `needs` (`needs[i]`: the steps `i` needs).
pub(crate) struct Upstream {
    /// Sorted copy of every step's needs (direct needs are answered by a binary search).
    direct: Vec<Vec<usize>>,
    /// The component of each step, in Tarjan's order (a component reaches only lower ones).
    comp: Vec<usize>,
    /// Whether a component is a cycle (more than one step, or a step that needs itself).
    cyclic: Vec<bool>,
    /// Longest path (in components) from a component down to one that needs nothing.
    level: Vec<usize>,
    /// Pre- and post-order numbers of the forest in which a component's parent is its deepest need.
    enter: Vec<usize>,
    exit: Vec<usize>,
    /// Answers to the questions the fast paths could not settle: `(asker, target)` components.
    solved: HashMap<(usize, usize), bool>,
}

impl Upstream {
    /// Prepares for the questions in `asked` (`(i, j)`: is `j` upstream of `i`), answering the hard ones.
    pub(crate) fn new(needs: &[Vec<usize>], sccs: &[Vec<usize>], asked: &[(usize, usize)]) -> Self {
        let n = needs.len();
        let mut comp = vec![0; n];
        for (c, members) in sccs.iter().enumerate() {
            for &v in members {
                comp[v] = c;
            }
        }
        let count = sccs.len();
        let mut cyclic: Vec<bool> = sccs.iter().map(|m| m.len() > 1).collect();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); count];
        for (v, ns) in needs.iter().enumerate() {
            for &w in ns {
                if comp[v] == comp[w] {
                    cyclic[comp[v]] |= v == w;
                } else {
                    edges[comp[v]].push(comp[w]);
                }
            }
        }
        // Levels and deepest needs, in Tarjan's order (every component's needs come first).
        let mut level = vec![0; count];
        let mut parent = vec![usize::MAX; count];
        for c in 0..count {
            for &d in &edges[c] {
                if parent[c] == usize::MAX || level[d] > level[parent[c]] {
                    parent[c] = d;
                }
            }
            if parent[c] != usize::MAX {
                level[c] = level[parent[c]] + 1;
            }
        }
        let (enter, exit) = euler(&parent);
        let direct = needs
            .iter()
            .map(|ns| {
                let mut s = ns.clone();
                s.sort_unstable();
                s
            })
            .collect();
        let mut up = Upstream {
            direct,
            comp,
            cyclic,
            level,
            enter,
            exit,
            solved: HashMap::new(),
        };
        let hard: Vec<(usize, usize)> = asked
            .iter()
            .filter(|&&(i, j)| up.quick(i, j).is_none())
            .map(|&(i, j)| (up.comp[i], up.comp[j]))
            .collect();
        up.solve(&edges, hard);
        up
    }

    /// Whether step `j` is upstream of step `i` (`i` needs it, directly or through other steps). Exact for
    /// every pair given to [`Upstream::new`]; for another pair that the fast paths cannot settle, false.
    pub(crate) fn is_upstream(&self, i: usize, j: usize) -> bool {
        self.quick(i, j).unwrap_or_else(|| {
            self.solved
                .get(&(self.comp[i], self.comp[j]))
                .copied()
                .unwrap_or(false)
        })
    }

    /// The answer when a constant-time rule settles it.
    fn quick(&self, i: usize, j: usize) -> Option<bool> {
        let (ci, cj) = (*self.comp.get(i)?, *self.comp.get(j)?);
        if ci == cj {
            return Some(self.cyclic[ci]);
        }
        if self.direct[i].binary_search(&j).is_ok() {
            return Some(true);
        }
        if cj > ci || self.level[cj] >= self.level[ci] {
            return Some(false);
        }
        if self.enter[cj] <= self.enter[ci] && self.exit[ci] <= self.exit[cj] {
            return Some(true);
        }
        None
    }

    /// Answers `(asker, target)` component pairs by propagating, for 64 targets at a time, the set of those
    /// targets each component reaches, from the lowest target up to the highest asker.
    fn solve(&mut self, edges: &[Vec<usize>], mut hard: Vec<(usize, usize)>) {
        if hard.is_empty() {
            return;
        }
        hard.sort_unstable_by_key(|&(a, t)| (t, a));
        hard.dedup();
        let mut targets: Vec<usize> = hard.iter().map(|&(_, t)| t).collect();
        targets.dedup();
        let mut bit_of: HashMap<usize, u32> = HashMap::new();
        let mut reach = vec![0u64; edges.len()];
        let mut start = 0;
        for chunk in targets.chunks(64) {
            bit_of.clear();
            for (b, &t) in chunk.iter().enumerate() {
                bit_of.insert(t, b as u32);
            }
            let end = start + hard[start..].partition_point(|&(_, t)| bit_of.contains_key(&t));
            let questions = &hard[start..end];
            start = end;
            let low = chunk[0];
            let high = questions.iter().map(|&(a, _)| a).max().unwrap_or(low);
            let own = |c: usize| bit_of.get(&c).map_or(0, |&b| 1u64 << b);
            for c in low..=high {
                let mut bits = 0;
                for &d in &edges[c] {
                    if d >= low {
                        bits |= reach[d] | own(d);
                    }
                }
                reach[c] = bits;
            }
            for &(a, t) in questions {
                let bit = own(t);
                self.solved.insert((a, t), reach[a] & bit != 0);
            }
            reach[low..=high].fill(0);
        }
    }
}

/// Pre- and post-order numbers of the forest given by `parent` (`usize::MAX`: a root), iteratively.
fn euler(parent: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let n = parent.len();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (c, &p) in parent.iter().enumerate() {
        if p != usize::MAX {
            children[p].push(c);
        }
    }
    let mut enter = vec![0; n];
    let mut exit = vec![0; n];
    let mut clock = 0;
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in (0..n).filter(|&c| parent[c] == usize::MAX) {
        stack.push((root, 0));
        enter[root] = clock;
        clock += 1;
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if let Some(&w) = children[v].get(*next) {
                *next += 1;
                enter[w] = clock;
                clock += 1;
                stack.push((w, 0));
            } else {
                exit[v] = clock;
                clock += 1;
                stack.pop();
            }
        }
    }
    (enter, exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reachability by search, to compare with.
    fn reaches(needs: &[Vec<usize>], i: usize, j: usize) -> bool {
        let mut seen = vec![false; needs.len()];
        let mut stack = needs[i].clone();
        while let Some(v) = stack.pop() {
            if v == j {
                return true;
            }
            if !std::mem::replace(&mut seen[v], true) {
                stack.extend(needs[v].iter().copied());
            }
        }
        false
    }

    fn check(needs: &[Vec<usize>]) {
        let sccs = crate::playbook::tarjan(needs);
        let n = needs.len();
        let asked: Vec<(usize, usize)> = (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).collect();
        let up = Upstream::new(needs, &sccs, &asked);
        for &(i, j) in &asked {
            assert_eq!(
                up.is_upstream(i, j),
                reaches(needs, i, j),
                "{i} -> {j} in {needs:?}"
            );
        }
    }

    #[test]
    fn agrees_with_search_on_small_graphs() {
        check(&[vec![], vec![0], vec![1], vec![2]]);
        check(&[vec![], vec![0], vec![0], vec![1, 2], vec![3], vec![2]]);
        check(&[vec![1], vec![2], vec![0], vec![2], vec![3, 3]]);
        check(&[vec![0], vec![], vec![1, 0]]);
        // 300 graphs on 7 nodes drawn by a fixed pseudo-random sequence.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..300 {
            let needs: Vec<Vec<usize>> = (0..7)
                .map(|_| {
                    (0..7)
                        .filter(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x.is_multiple_of(5)
                        })
                        .collect()
                })
                .collect();
            check(&needs);
        }
    }

    #[test]
    fn many_hard_targets_take_several_chunks() {
        // A ladder: `a[k]` needs `a[k-1]`; `b[k]` needs `b[k-1]` then `a[k]`. The deepest-need forest follows
        // the `b` rail, so "is `a[j]` upstream of `b[k]`" is a hard question: 150 targets, three chunks.
        let k = 150;
        let a = |i: usize| 2 * i;
        let b = |i: usize| 2 * i + 1;
        let needs: Vec<Vec<usize>> = (0..2 * k)
            .map(|v| match (v % 2, v / 2) {
                (0, 0) => vec![],
                (0, i) => vec![a(i - 1)],
                (_, 0) => vec![a(0)],
                (_, i) => vec![b(i - 1), a(i)],
            })
            .collect();
        let sccs = crate::playbook::tarjan(&needs);
        let asked: Vec<(usize, usize)> = (0..k)
            .flat_map(|i| (0..k).map(move |j| (b(i), a(j))))
            .collect();
        let up = Upstream::new(&needs, &sccs, &asked);
        assert!(asked.iter().any(|&(i, j)| up.quick(i, j).is_none()));
        for &(i, j) in &asked {
            assert_eq!(up.is_upstream(i, j), reaches(&needs, i, j), "{i} -> {j}");
            assert_eq!(up.is_upstream(i, j), j / 2 <= i / 2, "{i} -> {j}");
        }
    }
}
