//! Path resolution inside a [`Tree`]: the one walker every lookup by path goes through.
//!
//! Paths here are image paths, resolved against the tree and never against the host. Three
//! callers need three sets of rules, which [`Rules`] spells out:
//! * the layer applier resolves parent paths like `securejoin.SecureJoinVFS` ([`Rules::SECURE_JOIN`]):
//!   every symlink is followed, missing components are kept as names so the result may name
//!   something that does not exist yet, an empty symlink target means its own directory;
//! * the `/.singularity.d` editor and the architecture probe resolve like the kernel inside a
//!   chroot ([`Rules::chroot`]): the walk stops at the first missing directory or non-directory,
//!   and the last component is followed only when asked;
//! * [`Tree::resolve`] looks a path up literally ([`Rules::LITERAL`]): no symlink is followed and
//!   `..` is refused.
//!
//! In every mode an absolute symlink target restarts at the root and `..` never climbs above it.

use std::collections::VecDeque;

use super::{is_plain_name, InodeId, Kind, Tree, ROOT};

/// Which symlinks a walk follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    Never,
    /// Every symlink but one named by the last component.
    AllButLast,
    All,
}

/// What a walk does with a component it cannot descend through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Keep the component as a name without an inode and go on (`securejoin`).
    Keep,
    /// Stop with an error, as a kernel lookup does.
    Stop,
}

/// How one walk treats symlinks, `..` and what is missing, and how much work it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub follow: Follow,
    /// `false`: a `..` component fails the walk with [`WalkError::DotDot`].
    pub allow_dotdot: bool,
    pub missing: Missing,
    /// Symlinks followed in one walk.
    pub max_hops: usize,
    /// Components processed in one walk (the path's own plus every followed target's), so that
    /// chains of long targets cannot turn one lookup into seconds of work.
    pub max_steps: usize,
}

impl Rules {
    /// `filepath-securejoin`'s rules, with its 255-hop limit.
    pub const SECURE_JOIN: Rules = Rules {
        follow: Follow::All,
        allow_dotdot: true,
        missing: Missing::Keep,
        max_hops: 255,
        max_steps: 16 * 1024,
    };

    /// A path exactly as written: no symlinks followed, no `..`.
    pub const LITERAL: Rules = Rules {
        follow: Follow::Never,
        allow_dotdot: false,
        missing: Missing::Stop,
        max_hops: 0,
        max_steps: usize::MAX,
    };

    /// The kernel's lookup inside a chroot, with Linux's limit of 40 symlinks per lookup.
    pub const fn chroot(follow_last: bool) -> Rules {
        Rules {
            follow: if follow_last {
                Follow::All
            } else {
                Follow::AllButLast
            },
            allow_dotdot: true,
            missing: Missing::Stop,
            max_hops: 40,
            max_steps: usize::MAX,
        }
    }
}

/// A symlink-free path from the root, component by component.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Walked {
    /// Each component with its inode, `None` once the path leaves the existing tree (only with
    /// [`Missing::Keep`], or for the last component with [`Missing::Stop`]).
    pub components: Vec<(Vec<u8>, Option<InodeId>)>,
    /// The walk ended on a named component, not on a `..` (nor on an empty path).
    pub ends_with_name: bool,
}

impl Walked {
    /// The inode the path ends at, if it exists.
    pub fn inode(&self) -> Option<InodeId> {
        self.components
            .last()
            .map_or(Some(ROOT), |(_, inode)| *inode)
    }

    /// The directory holding the last component (the root for a one-component path).
    pub fn parent(&self) -> Option<InodeId> {
        match self.components.len() {
            0 | 1 => Some(ROOT),
            n => self.components[n - 2].1,
        }
    }

    /// The components' names.
    pub fn names(self) -> Vec<Vec<u8>> {
        self.components.into_iter().map(|(name, _)| name).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkError {
    /// More symlinks or components than the rules allow.
    Loop,
    /// A `..` under [`Rules::LITERAL`].
    DotDot,
    /// Something on the way is not a directory, or a symlink target is empty ([`Missing::Stop`]).
    NotADirectory,
    /// A directory on the way is missing ([`Missing::Stop`]): `name` is absent from `parent`.
    MissingDir { parent: InodeId, name: Vec<u8> },
}

/// Walks `path` (`/`-separated; leading, doubled and trailing `/` and `.` components do not
/// count) from the root under `rules`.
pub fn walk(tree: &Tree, path: &[u8], rules: Rules) -> Result<Walked, WalkError> {
    let mut pending = VecDeque::new();
    let steps = push_front_components(&mut pending, path);
    Walker::new(tree, rules, pending, steps).run()
}

/// [`walk`] for a path already split into components.
pub fn walk_components(
    tree: &Tree,
    components: &[&[u8]],
    rules: Rules,
) -> Result<Walked, WalkError> {
    let pending = components
        .iter()
        .filter(|c| !c.is_empty() && **c != b".")
        .map(|c| c.to_vec())
        .collect();
    Walker::new(tree, rules, pending, components.len()).run()
}

/// Queues `path`'s components in front of `pending`, in order; returns how many `/`-separated
/// pieces it had (empty ones included: that is the work a hop costs).
fn push_front_components(pending: &mut VecDeque<Vec<u8>>, path: &[u8]) -> usize {
    let pieces: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    for piece in pieces.iter().rev() {
        if !piece.is_empty() && *piece != b"." {
            pending.push_front(piece.to_vec());
        }
    }
    pieces.len()
}

struct Walker<'t> {
    tree: &'t Tree,
    rules: Rules,
    pending: VecDeque<Vec<u8>>,
    walked: Walked,
    hops: usize,
    steps: usize,
}

impl<'t> Walker<'t> {
    fn new(tree: &'t Tree, rules: Rules, pending: VecDeque<Vec<u8>>, steps: usize) -> Self {
        Walker {
            tree,
            rules,
            pending,
            walked: Walked::default(),
            hops: 0,
            steps,
        }
    }

    fn run(mut self) -> Result<Walked, WalkError> {
        while let Some(name) = self.pending.pop_front() {
            if name == b".." {
                if !self.rules.allow_dotdot {
                    return Err(WalkError::DotDot);
                }
                self.walked.components.pop();
                self.walked.ends_with_name = false;
                continue;
            }
            self.step(name)?;
        }
        Ok(self.walked)
    }

    fn step(&mut self, name: Vec<u8>) -> Result<(), WalkError> {
        let stop = self.rules.missing == Missing::Stop;
        if stop && !is_plain_name(&name) {
            return Err(WalkError::NotADirectory);
        }
        let is_last = self.pending.is_empty();
        let parent = self.walked.inode();
        let found = parent.and_then(|dir| self.tree.lookup(dir, &name));
        let Some(id) = found else {
            if stop && !is_last {
                return Err(WalkError::MissingDir {
                    parent: parent.unwrap_or(ROOT),
                    name,
                });
            }
            self.push(name, None);
            return Ok(());
        };
        match &self.tree.inode(id).kind {
            Kind::Symlink(target) if self.follows(is_last) => return self.hop(target),
            Kind::Dir(_) => {}
            _ if stop && !is_last => return Err(WalkError::NotADirectory),
            _ => {}
        }
        self.push(name, Some(id));
        Ok(())
    }

    fn follows(&self, is_last: bool) -> bool {
        match self.rules.follow {
            Follow::Never => false,
            Follow::AllButLast => !is_last,
            Follow::All => true,
        }
    }

    /// Replaces the symlink component by its target's components.
    fn hop(&mut self, target: &[u8]) -> Result<(), WalkError> {
        self.hops += 1;
        self.steps = self
            .steps
            .saturating_add(target.split(|b| *b == b'/').count());
        if self.hops > self.rules.max_hops || self.steps > self.rules.max_steps {
            return Err(WalkError::Loop);
        }
        if target.is_empty() && self.rules.missing == Missing::Stop {
            return Err(WalkError::NotADirectory);
        }
        if target.starts_with(b"/") {
            self.walked.components.clear();
        }
        push_front_components(&mut self.pending, target);
        Ok(())
    }

    fn push(&mut self, name: Vec<u8>, inode: Option<InodeId>) {
        self.walked.components.push((name, inode));
        self.walked.ends_with_name = true;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::tree::{Content, Meta};

    /// `/etc/hosts` (file), `/lib -> usr/lib`, `/usr/lib/x` (file), `/abs -> /etc`,
    /// `/loop -> loop`, `/empty -> ""`.
    fn sample() -> Tree {
        let mut t = Tree::new();
        let dir = |t: &mut Tree| t.add_inode(Kind::Dir(BTreeMap::new()), Meta::new(0o755, 0, 0, 0));
        let file =
            |t: &mut Tree| t.add_inode(Kind::File(Content::EMPTY), Meta::new(0o644, 0, 0, 0));
        let link = |t: &mut Tree, target: &str| {
            t.add_inode(
                Kind::Symlink(target.as_bytes().to_vec()),
                Meta::new(0o777, 0, 0, 0),
            )
        };
        let etc = dir(&mut t);
        t.link(ROOT, b"etc".to_vec(), etc);
        let hosts = file(&mut t);
        t.link(etc, b"hosts".to_vec(), hosts);
        let usr = dir(&mut t);
        t.link(ROOT, b"usr".to_vec(), usr);
        let lib = dir(&mut t);
        t.link(usr, b"lib".to_vec(), lib);
        let x = file(&mut t);
        t.link(lib, b"x".to_vec(), x);
        for (name, target) in [
            ("lib", "usr/lib"),
            ("abs", "/etc"),
            ("loop", "loop"),
            ("empty", ""),
        ] {
            let id = link(&mut t, target);
            t.link(ROOT, name.as_bytes().to_vec(), id);
        }
        t
    }

    fn names(w: &Walked) -> Vec<String> {
        w.components
            .iter()
            .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
            .collect()
    }

    #[test]
    fn secure_join_keeps_missing_components_and_follows_everything() {
        let t = sample();
        let w = walk(&t, b"lib/missing/../x", Rules::SECURE_JOIN).unwrap();
        assert_eq!(names(&w), ["usr", "lib", "x"]);
        assert!(w.inode().is_some());
        let w = walk(&t, b"etc/hosts/below", Rules::SECURE_JOIN).unwrap();
        assert_eq!(names(&w), ["etc", "hosts", "below"]);
        assert_eq!(w.inode(), None);
        assert_eq!(
            names(&walk(&t, b"empty/etc", Rules::SECURE_JOIN).unwrap()),
            ["etc"]
        );
        assert_eq!(walk(&t, b"loop", Rules::SECURE_JOIN), Err(WalkError::Loop));
        assert_eq!(
            names(&walk(&t, b"../../abs/x", Rules::SECURE_JOIN).unwrap()),
            ["etc", "x"]
        );
    }

    #[test]
    fn chroot_stops_where_the_kernel_would() {
        let t = sample();
        let w = walk(&t, b"lib", Rules::chroot(false)).unwrap();
        assert_eq!(names(&w), ["lib"]);
        let w = walk(&t, b"lib/x", Rules::chroot(false)).unwrap();
        assert_eq!(names(&w), ["usr", "lib", "x"]);
        let w = walk(&t, b"etc/new", Rules::chroot(true)).unwrap();
        assert_eq!((w.inode(), w.parent()), (None, t.resolve(b"etc")));
        assert!(matches!(
            walk(&t, b"nope/new", Rules::chroot(true)),
            Err(WalkError::MissingDir { parent: ROOT, .. })
        ));
        assert_eq!(
            walk(&t, b"etc/hosts/x", Rules::chroot(true)),
            Err(WalkError::NotADirectory)
        );
        assert_eq!(
            walk(&t, b"empty/x", Rules::chroot(true)),
            Err(WalkError::NotADirectory)
        );
        assert_eq!(walk(&t, b"loop", Rules::chroot(true)), Err(WalkError::Loop));
        let w = walk(&t, b"etc/..", Rules::chroot(true)).unwrap();
        assert!(!w.ends_with_name && w.components.is_empty());
    }

    #[test]
    fn literal_follows_nothing() {
        let t = sample();
        assert_eq!(
            walk(&t, b"lib/x", Rules::LITERAL),
            Err(WalkError::NotADirectory)
        );
        assert_eq!(
            walk(&t, b"etc/../etc", Rules::LITERAL),
            Err(WalkError::DotDot)
        );
        assert!(walk(&t, b"/usr//lib/./x", Rules::LITERAL)
            .unwrap()
            .inode()
            .is_some());
    }
}
