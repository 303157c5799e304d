//! Secrets out of URLs and connection strings, so that they can be
//! printed: in `berth config`, in errors, in logs.

/// The URL with the secret of its user info replaced by `***`, and any
/// `password=` query parameter too, so it can be printed: the password of
/// `user:password@` (the user stays, for the operator), or a user alone,
/// which can be a token (`https://<token>@host/`). Without a scheme, a
/// `user@` before the first `/` (an scp-like ssh prefix, or a URL typed
/// without its scheme) is user info too, and a libpq key=value string
/// (`host=db password=s3cret`, which the error for a value that is no URL
/// repeats) has its password keywords masked. A password typed with an
/// `@`, `/`, `?` or `#` unencoded (which ends the user info or the
/// authority for a URL parser) is still masked: after `user:`, up to the
/// last `@`, more than the password when a path holds an `@` too, never
/// less.
pub fn mask_url(raw: &str) -> String {
    // A libpq key=value string starts with a keyword and `=`.
    let keyword = raw.split_once('=').map(|(k, _)| k.trim());
    let scheme_end = scheme_end(raw);
    if scheme_end.is_none()
        && keyword.is_some_and(|k| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    {
        return mask_keyword_password(raw);
    }
    let mut out = raw.to_string();
    let rest_start = scheme_end.unwrap_or(0);
    let authority_end = out[rest_start..]
        .find(['/', '?', '#'])
        .map_or(out.len(), |i| rest_start + i);
    let head = &out[rest_start..authority_end];
    let last_at = out[rest_start..].rfind('@');
    if let Some(colon) = head.find(':')
        && let Some(at) = last_at.filter(|at| *at > colon)
    {
        out.replace_range(rest_start + colon + 1..rest_start + at, "***");
    } else if let Some(at) = head.rfind('@') {
        out.replace_range(rest_start..rest_start + at, "***");
    }
    if scheme_end.is_none() {
        return mask_keyword_password(&out);
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let masked: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_password_key(k) => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{base}{}", masked.join("&"));
    }
    out
}

/// Where the `scheme://` a URL starts with ends (a scheme is a letter,
/// then letters, digits, `+`, `-` or `.`); `None` without one.
fn scheme_end(raw: &str) -> Option<usize> {
    let at = raw.find("://")?;
    let scheme = &raw[..at];
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(at + 3)
}

/// libpq's parameters that hold a secret: the password, and the
/// passphrase of the client's key.
fn is_password_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

/// Masks the value of each `password = …` (and `sslpassword = …`) keyword
/// of a libpq key=value string, quoted (`'a\'b'`: libpq escapes with a
/// backslash) or bare.
fn mask_keyword_password(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.to_ascii_lowercase().find("password") {
        let starts_word = at == 0
            || rest[..at].ends_with(char::is_whitespace)
            || (rest[..at].to_ascii_lowercase().ends_with("ssl")
                && (at == 3 || rest[..at - 3].ends_with(char::is_whitespace)));
        let after = &rest[at + "password".len()..];
        let trimmed = after.trim_start();
        if !starts_word || !trimmed.starts_with('=') {
            out.push_str(&rest[..at + "password".len()]);
            rest = after;
            continue;
        }
        let value = trimmed[1..].trim_start();
        out.push_str(&rest[..rest.len() - value.len()]);
        out.push_str("***");
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            1 + end
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_url_hides_the_password_of_a_key_value_connection_string() {
        assert_eq!(
            mask_url("host=127.0.0.1 port=5432 user=berth password=KVsecret77 dbname=postgres"),
            "host=127.0.0.1 port=5432 user=berth password=*** dbname=postgres"
        );
        assert_eq!(
            mask_url("password = 'it\\'s secret' host=db"),
            "password = *** host=db"
        );
        assert_eq!(mask_url("PASSWORD=x"), "PASSWORD=***");
        assert_eq!(
            mask_url("host=db sslpassword=kp1 user=u"),
            "host=db sslpassword=*** user=u"
        );
        assert_eq!(mask_url("host=db mypassword=y"), "host=db mypassword=y");
    }

    #[test]
    fn mask_url_hides_a_user_alone_and_the_password_of_a_user() {
        assert_eq!(
            mask_url("https://tok-123@git.example/org/tpl-"),
            "https://***@git.example/org/tpl-"
        );
        assert_eq!(
            mask_url("https://bob:pw-456@git.example:3000/org/tpl-"),
            "https://bob:***@git.example:3000/org/tpl-"
        );
        assert_eq!(
            mask_url("postgres://berth:s3cret@db:5432/berth"),
            "postgres://berth:***@db:5432/berth"
        );
        assert_eq!(
            mask_url("ssh://git@git.example/org/tpl-"),
            "ssh://***@git.example/org/tpl-"
        );
        assert_eq!(
            mask_url("git@git.example:org/tpl-"),
            "***@git.example:org/tpl-"
        );
        assert_eq!(
            mask_url("tok-123@git.example/org/tpl-"),
            "***@git.example/org/tpl-"
        );
    }

    #[test]
    fn mask_url_hides_a_password_typed_with_a_character_that_ends_the_authority() {
        for (raw, shown) in [
            (
                "postgres://berth:s3cr#et@db.internal:5432/berth",
                "postgres://berth:***@db.internal:5432/berth",
            ),
            ("postgres://u:pa/ss@db/berth", "postgres://u:***@db/berth"),
            ("postgres://u:pa?ss@db/berth", "postgres://u:***@db/berth"),
            ("postgres://u:12/34@db/berth", "postgres://u:***@db/berth"),
            ("u:pa/ss@db/berth", "u:***@db/berth"),
            ("postgres://u:p@ss/w0rd@db/x", "postgres://u:***@db/x"),
            ("postgres://u:p@ss@db:5432/x", "postgres://u:***@db:5432/x"),
            (
                "host=db password=p@ss user=u",
                "host=db password=*** user=u",
            ),
            ("hostaddr=::1 password=a/b@c", "hostaddr=::1 password=***"),
            (
                "postgres://h/db?sslpassword=kp1&password=pw2",
                "postgres://h/db?sslpassword=***&password=***",
            ),
        ] {
            assert_eq!(mask_url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn mask_url_leaves_urls_without_user_info_and_paths_alone() {
        for raw in [
            "https://git.example/org/tpl-",
            "https://git.example/org@2/tpl-",
            "/srv/git/user@host/tpl-",
            "file:///srv/git/tpl-",
        ] {
            assert_eq!(mask_url(raw), raw);
        }
        assert_eq!(
            mask_url("postgres://h/db?password=x&sslmode=disable"),
            "postgres://h/db?password=***&sslmode=disable"
        );
    }

    proptest::proptest! {
        /// Whatever a password holds unencoded, none of it shows, in a URL
        /// or a key=value string (the `Zq` it starts with is nowhere else).
        #[test]
        fn mask_url_never_shows_a_password(
            password in "Zq[a-zA-Z0-9#/?@%!:=&]{0,20}",
            query in proptest::option::of("[a-z]{1,6}=[a-z0-9]{0,6}"),
        ) {
            let query = query.map_or(String::new(), |q| format!("?{q}"));
            for raw in [
                format!("postgres://berth:{password}@db.internal:5432/berth{query}"),
                format!("https://bob:{password}@git.example/org/tpl-"),
                format!("berth:{password}@db/berth"),
                format!("host=db password={password}"),
                format!("postgres://db/berth?password={password}"),
            ] {
                let shown = mask_url(&raw);
                proptest::prop_assert!(!shown.contains(&password), "{raw} → {shown}");
            }
        }
    }
}
