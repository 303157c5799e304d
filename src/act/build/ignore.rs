//! `.dockerignore`, which the docker CLI applies to a build context before
//! sending it (the engine does not): one pattern a line, `#` comments,
//! `!` re-includes, `*` and `?` within a path segment, `**` across
//! segments, a leading `/` or `./` dropped. The last pattern matching a
//! path or one of its parent directories decides.

/// The parsed patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    negate: bool,
    segments: Vec<String>,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|line| {
                let (negate, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let segments: Vec<String> = pattern
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_string)
                    .collect();
                (!segments.is_empty()).then_some(Rule { negate, segments })
            })
            .collect();
        Ignore { rules }
    }

    /// Whether `path` (relative, `/`-separated) is left out.
    pub fn excluded(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for rule in &self.rules {
            if (1..=parts.len()).any(|n| matches(&rule.segments, &parts[..n])) {
                excluded = !rule.negate;
            }
        }
        excluded
    }

    /// Whether some pattern re-includes paths, so an excluded directory
    /// must still be looked into.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.negate)
    }
}

/// Path segments against pattern segments, `**` standing for any run of
/// segments.
fn matches(pattern: &[String], path: &[&str]) -> bool {
    wildcard(
        pattern,
        path,
        |p| p == "**",
        |p, s| segment(p.as_bytes(), s.as_bytes()),
    )
}

/// `*` (any run) and `?` (one character) within one segment.
fn segment(p: &[u8], s: &[u8]) -> bool {
    wildcard(p, s, |p| *p == b'*', |p, s| *p == b'?' || p == s)
}

/// Whether `items` match `pattern`, where a star stands for any run of
/// items and any other pattern item for one item it `fits`. It goes back
/// only to the last star, so its work grows with the product of the
/// lengths, never exponentially: a template repository's `.dockerignore`
/// of many stars cannot hang the build.
fn wildcard<P, S>(
    pattern: &[P],
    items: &[S],
    star: impl Fn(&P) -> bool,
    fits: impl Fn(&P, &S) -> bool,
) -> bool {
    let (mut p, mut i) = (0, 0);
    // The last star seen and the item its run ends before.
    let mut back: Option<(usize, usize)> = None;
    while i < items.len() {
        match pattern.get(p) {
            Some(x) if star(x) => {
                back = Some((p, i));
                p += 1;
            }
            Some(x) if fits(x, &items[i]) => {
                p += 1;
                i += 1;
            }
            _ => match back {
                // The star takes one more item and the rest tries again.
                Some((star_at, run_end)) => {
                    back = Some((star_at, run_end + 1));
                    p = star_at + 1;
                    i = run_end + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(star)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain recursive reading of `*` and `?`, to hold the matcher to.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| reference(rest, &s[i..])),
            Some((b'?', rest)) => !s.is_empty() && reference(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && reference(rest, &s[1..]),
        }
    }

    proptest! {
        #[test]
        fn a_segment_matches_as_the_recursive_reading_says(
            p in "[ab*?]{0,8}",
            s in "[ab]{0,10}",
        ) {
            prop_assert_eq!(segment(p.as_bytes(), s.as_bytes()), reference(p.as_bytes(), s.as_bytes()));
        }

        #[test]
        fn paths_match_as_the_recursive_reading_says(
            p in proptest::collection::vec("\\*\\*|[ab*]{1,2}", 0..5),
            s in proptest::collection::vec("[ab]{1,2}", 0..6),
        ) {
            let path: Vec<&str> = s.iter().map(String::as_str).collect();
            // `**` as a byte `*` of a reading one level up: the same
            // recursion over segments.
            fn by_segments(p: &[String], s: &[&str]) -> bool {
                match p.split_first() {
                    None => s.is_empty(),
                    Some((f, rest)) if f == "**" => (0..=s.len()).any(|i| by_segments(rest, &s[i..])),
                    Some((f, rest)) => !s.is_empty()
                        && reference(f.as_bytes(), s[0].as_bytes())
                        && by_segments(rest, &s[1..]),
                }
            }
            prop_assert_eq!(matches(&p, &path), by_segments(&p, &path));
        }
    }

    #[test]
    fn many_stars_against_a_long_name_end_at_once() {
        let pattern = format!("{}b", "*a".repeat(40));
        let name = "a".repeat(4000);
        let ig = Ignore::parse(&format!("{pattern}\n{}/x", "**/".repeat(40)));
        assert!(!ig.excluded(&name));
        let deep = vec!["d"; 200].join("/");
        assert!(!ig.excluded(&deep));
    }

    #[test]
    fn patterns_follow_the_docker_cli() {
        let ig = Ignore::parse(
            "# build output\n\
             node_modules\n\
             /dist/\n\
             *.md\n\
             !README.md\n\
             **/__pycache__\n\
             docs\n\
             !docs/keep.txt\n\
             ./tmp?\n",
        );
        for out in [
            "node_modules",
            "node_modules/x/y.js",
            "dist/app.js",
            "CHANGES.md",
            "a/b/__pycache__/m.pyc",
            "__pycache__",
            "docs/other.txt",
            "tmp1",
        ] {
            assert!(ig.excluded(out), "{out} should be left out");
        }
        for kept in [
            "README.md",
            "src/main.py",
            "src/notes.md",
            "docs/keep.txt",
            "tmp",
            "distro/x",
        ] {
            assert!(!ig.excluded(kept), "{kept} should be kept");
        }
        assert!(ig.has_exceptions());
        assert_eq!(Ignore::parse("\n# only comments\n"), Ignore::default());
    }
}
