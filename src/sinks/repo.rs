//! The repository path in a Git remote URL, for Allstacks' `repo_name`: `owner/repo` from the
//! forms Jenkins' Git plugin reports in `GIT_URL` (https, ssh, scp-like, git), the whole path
//! for deeper ones such as GitLab subgroups (`jenkins-events.md` §5.2).
//!
//! The URL comes from the job's configuration and may carry credentials
//! (`https://user:token@host/...`, `?private_token=...`); nothing before the host or after the
//! path ever reaches the answer.

/// `owner/repo` (or `group/sub/repo`) of a Git remote URL; `None` when it names no repository
/// path on a host, or when a segment is one hookgate will not pass on (`.`, `..`, whitespace,
/// control characters, backslashes).
pub fn repo_name(scm_url: &str) -> Option<String> {
    let text = scm_url.trim();
    let path = match text.split_once("://") {
        Some((scheme, rest)) => {
            if scheme.is_empty() || scheme.eq_ignore_ascii_case("file") {
                return None;
            }
            let (host, path) = without_secrets(rest)?.split_once('/')?;
            if host.is_empty() {
                return None;
            }
            path
        }
        None => {
            // scp-like `[user@]host:path`; as in Git, only when no `/` comes before the colon.
            let (host, path) = without_secrets(text)?.split_once(':')?;
            if host.is_empty() || host.contains('/') {
                return None;
            }
            path
        }
    };
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let last = segments.last_mut()?;
    *last = last.strip_suffix(".git").unwrap_or(last);
    let acceptable = |segment: &&str| {
        !segment.is_empty()
            && *segment != "."
            && *segment != ".."
            && !segment
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\\' || c == '@')
    };
    if segments.iter().all(acceptable) {
        Some(segments.join("/"))
    } else {
        None
    }
}

/// `host…/path` of what follows the scheme, without credentials, query or fragment, which may
/// all hold tokens.
///
/// A password may hold an unencoded `/`, but no hosted repository path holds `@`, so the last
/// `@` is where credentials end. When a `?` or `#` comes before that `@`, it is either a
/// password holding them or a query holding an `@`; either reading could pass a piece of a
/// secret on, so such a URL gives nothing.
fn without_secrets(rest: &str) -> Option<&str> {
    let rest = match rest.rsplit_once('@') {
        Some((credentials, _)) if credentials.contains(['?', '#']) => return None,
        Some((_, rest)) => rest,
        None => rest,
    };
    rest.split(['?', '#']).next()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::repo_name;

    #[track_caller]
    fn check(url: &str, expected: Option<&str>) {
        assert_eq!(repo_name(url).as_deref(), expected, "for {url:?}");
    }

    #[test]
    fn remote_urls_give_their_repository_path() {
        // The https and scp forms of jenkins-events.md §1.6.
        check(
            "https://github.com/acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "git@github.com:acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "https://github.com/acme/payments-api",
            Some("acme/payments-api"),
        );
        check(
            "https://github.com/acme/payments-api/",
            Some("acme/payments-api"),
        );
        check(
            "https://github.com/acme/payments-api.git/",
            Some("acme/payments-api"),
        );
        check(
            "http://git.example.com/acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "HTTPS://GitHub.com/Acme/Payments-API.git",
            Some("Acme/Payments-API"),
        );
        check(
            "ssh://git@github.com/acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "ssh://git@git.example.com:7999/acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "ssh://github.com/acme/payments-api",
            Some("acme/payments-api"),
        );
        check(
            "git://github.com/acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "git+ssh://git@github.com/acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "github.com:acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "git@github.com:/acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "  https://github.com/acme/payments-api.git\n",
            Some("acme/payments-api"),
        );
        // Deeper paths are kept whole: GitLab subgroups, Bitbucket Server, Azure DevOps.
        check(
            "https://gitlab.com/group/sub/payments-api.git",
            Some("group/sub/payments-api"),
        );
        check(
            "git@gitlab.com:group/sub/deeper/payments-api.git",
            Some("group/sub/deeper/payments-api"),
        );
        check(
            "https://bitbucket.example.com/scm/pay/payments-api.git",
            Some("scm/pay/payments-api"),
        );
        check(
            "https://dev.azure.com/acme/pay/_git/payments-api",
            Some("acme/pay/_git/payments-api"),
        );
        // One segment is still a path.
        check(
            "https://git.example.com/payments-api.git",
            Some("payments-api"),
        );
        // Only the last `.git` suffix of the last segment goes.
        check(
            "https://github.com/acme/payments.git.git",
            Some("acme/payments.git"),
        );
        check(
            "https://github.com/acme.git/payments",
            Some("acme.git/payments"),
        );
    }

    #[test]
    fn credentials_query_and_fragment_never_reach_the_answer() {
        check(
            "https://jdoe:s3cret@github.com/acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "https://x-access-token:ghp_abc@github.com/acme/payments-api",
            Some("acme/payments-api"),
        );
        check(
            "https://jdoe:pa/ss@github.com/acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "https://jdoe:p@ss@github.com/acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "https://github.com/acme/payments-api.git?private_token=s3cret",
            Some("acme/payments-api"),
        );
        check(
            "https://github.com/acme/payments-api.git#s3cret",
            Some("acme/payments-api"),
        );
        check(
            "jdoe:s3cret@github.com:acme/payments-api.git",
            Some("acme/payments-api"),
        );
        check(
            "https://jdoe:s3cret@github.com/acme/payments-api.git?ref=main",
            Some("acme/payments-api"),
        );
        // Ambiguous: a password with `#` or `?` in it, or a query with an `@`.
        check(
            "https://jdoe:pa/ss#wd@github.com/acme/payments-api.git",
            None,
        );
        check(
            "https://jdoe:pa/ss?wd@github.com/acme/payments-api.git",
            None,
        );
        check(
            "https://github.com/acme/payments-api?token=s3/cret@evil/leak",
            None,
        );
        // Without a scheme or an scp colon after the host, there is nothing to read.
        check("jdoe:s3cret@github.com/acme/payments-api.git", None);
    }

    #[test]
    fn urls_without_a_clean_repository_path_give_none() {
        check("", None);
        check("   ", None);
        check("https://github.com", None);
        check("https://github.com/", None);
        check("https://github.com//", None);
        check("https:///acme/payments-api.git", None);
        check("://github.com/acme/x", None);
        check("git@github.com:", None);
        check("git@github.com:/", None);
        check(":acme/payments-api", None);
        check("github.com", None);
        check("/srv/git/acme/payments-api.git", None);
        check("./payments-api", None);
        check("file:///srv/git/acme/payments-api.git", None);
        check("C:\\repos\\payments-api", None);
        check("https://github.com/acme/.git", None);
        check("https://github.com/acme/../../etc/passwd", None);
        check("https://github.com/acme/./payments-api", None);
        check("git@github.com:../payments-api.git", None);
        check("https://github.com/acme/pay ments", None);
        check("https://github.com/acme/pay\u{7}ments", None);
        check("https://github.com/acme\\payments", None);
        check("https://github.com/acme/pay\nments.git", None);
    }

    #[test]
    fn empty_segments_collapse() {
        check(
            "https://github.com//acme//payments-api.git//",
            Some("acme/payments-api"),
        );
        check(
            "git@github.com:acme///payments-api",
            Some("acme/payments-api"),
        );
    }

    proptest! {
        #[test]
        fn a_password_never_appears_in_the_answer(
            user in "[a-z]{1,8}",
            password in "[A-Za-z0-9/:@?#._~-]{4,16}",
            path in "[a-z]{1,8}/[a-z]{1,8}",
            scheme in prop::sample::select(vec!["https", "http", "ssh", "git"]),
        ) {
            let marked = format!("PW{password}PW");
            let url = format!("{scheme}://{user}:{marked}@example.com/{path}.git");
            let name = repo_name(&url);
            prop_assert!(!name.as_deref().unwrap_or_default().contains("PW"), "{:?}", name);
            if !password.contains(['?', '#']) {
                prop_assert_eq!(name.as_deref(), Some(path.as_str()));
            }
        }

        #[test]
        fn any_input_is_answered_without_panicking(url in "\\PC{0,40}") {
            if let Some(name) = repo_name(&url) {
                prop_assert!(!name.is_empty());
                prop_assert!(!name.split('/').any(|s| s == ".." || s.is_empty()));
            }
        }
    }
}
