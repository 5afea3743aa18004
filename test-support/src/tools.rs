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
    let found: Vec<Option<PathBuf>> = programs.iter().map(find_on_path).collect();
    if found.iter().all(Option::is_some) {
        return found.into_iter().collect();
    }
    let missing: Vec<&str> = programs
        .iter()
        .zip(&found)
        .filter(|(_, path)| path.is_none())
        .map(|(name, _)| *name)
        .collect();
    let in_ci = env::var_os("CI").is_some_and(|value| !value.is_empty());
    assert!(
        !in_ci,
        "{} not found on PATH, and CI is set, so the test may not skip; {install_hint}",
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
