//! Finding the programs a test needs, and what happens when one is missing: the test fails in CI
//! (which installs every tool, so a missing one is a broken setup) and skips elsewhere, saying
//! how to install it.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The paths of `programs` on `PATH`, in order; or, when one is missing, `None` after printing a
/// skip notice with `install_hint`.
///
/// # Panics
///
/// When a program is missing and the `CI` variable is set to a non-empty value.
pub fn require(programs: &[&str], install_hint: &str) -> Option<Vec<PathBuf>> {
    require_also_in(programs, &[], install_hint)
}

/// As [`require`], but a program not on `PATH` is also looked for in the directories `also_in`,
/// in order: for servers such as `nginx`, which Debian installs in `/usr/sbin`, on root's `PATH`
/// but not on other users'.
///
/// # Panics
///
/// When a program is missing and the `CI` variable is set to a non-empty value.
pub fn require_also_in(
    programs: &[&str],
    also_in: &[&str],
    install_hint: &str,
) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = programs
        .iter()
        .map(|name| {
            find_on_path(name).or_else(|| {
                also_in
                    .iter()
                    .map(|dir| Path::new(dir).join(name))
                    .find(|candidate| is_executable(candidate))
            })
        })
        .collect();
    if found.iter().all(Option::is_some) {
        return found.into_iter().collect();
    }
    let missing: Vec<&str> = programs
        .iter()
        .zip(&found)
        .filter(|(_, path)| path.is_none())
        .map(|(name, _)| *name)
        .collect();
    let place = if also_in.is_empty() {
        "on PATH".to_owned()
    } else {
        format!("on PATH or in {}", also_in.join(", "))
    };
    let in_ci = env::var_os("CI").is_some_and(|value| !value.is_empty());
    assert!(
        !in_ci,
        "{} not found {place}, and CI is set, so the test may not skip; {install_hint}",
        missing.join(" and ")
    );
    println!(
        "skipping: {} not installed; {install_hint}",
        missing.join(" and ")
    );
    None
}

/// The first executable file called `name` in a `PATH` directory.
fn find_on_path(name: impl AsRef<OsStr>) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name.as_ref()))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
