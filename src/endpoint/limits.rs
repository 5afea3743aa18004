//! Defaults that follow the machine: how many event streams a process can hold open.

/// Descriptors left for everything else a process opens (listeners, Redis, files, the app's own
/// connections): a twentieth of the limit, and at least 64.
fn reserve(limit: usize) -> usize {
    (limit / 20).max(64)
}

/// The default subscriber limit: the process's open-file limit less a reserve, so that a full
/// hub refuses new streams with 503 while the process can still accept connections (for the
/// app's own routes too). `None` where the limit cannot be read (not Linux).
pub(crate) fn default_max_subscribers() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft = open_files_soft_limit(&limits)?;
    Some(soft.saturating_sub(reserve(soft)).max(1))
}

/// The soft limit in a `/proc/<pid>/limits` listing ("Max open files  20000  20000  files").
fn open_files_soft_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(usize::MAX / 2),
        number => number.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_open_file_limit() {
        let listing = "Limit                     Soft Limit           Hard Limit           Units\n\
                       Max cpu time              unlimited            unlimited            seconds\n\
                       Max open files            1024                 20000                files\n";
        assert_eq!(open_files_soft_limit(listing), Some(1024));
        assert_eq!(reserve(1024), 64);
        assert_eq!(reserve(20_000), 1_000);
    }

    #[test]
    fn the_default_stays_below_this_process_s_limit() {
        if let Some(default) = default_max_subscribers() {
            let limits = std::fs::read_to_string("/proc/self/limits").expect("readable");
            let soft = open_files_soft_limit(&limits).expect("a limit");
            assert!(
                default < soft,
                "{default} streams would not fit in {soft} files"
            );
        }
    }
}
