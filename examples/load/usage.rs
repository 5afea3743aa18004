//! CPU time and resident memory of another process, and our open-file limit, read from /proc.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

/// What a process has used so far.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// User CPU time alone: the process's own code, without the kernel's work for it.
    pub user: Duration,
    /// Resident set size in KiB.
    pub rss_kib: u64,
    /// Write-family system calls made so far (`syscw` in /proc/PID/io): with one write per
    /// chunk, how many chunks the server sent.
    pub writes: u64,
}

/// Reads the CPU time and RSS of process `pid`.
pub fn of(pid: u32) -> io::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |at: usize| -> u64 { fields.get(at).and_then(|v| v.parse().ok()).unwrap_or(0) };
    // utime and stime are fields 14 and 15 of the whole line, 11 and 12 after the name.
    let seconds = |ticks: u64| Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64);
    let cpu = seconds(field(11) + field(12));
    let user = seconds(field(11));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Readable for our own children; 0 where the kernel keeps no I/O accounting.
    let writes = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("syscw:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    Ok(Usage {
        cpu,
        user,
        rss_kib,
        writes,
    })
}

/// Clock ticks per second (`getconf CLK_TCK`), asked once; 100 if getconf is missing, which is
/// what every mainstream Linux configuration uses.
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// This process's soft limit on open files, from /proc/self/limits; children inherit it.
pub fn open_files_limit() -> io::Result<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| match soft {
            "unlimited" => Some(usize::MAX),
            soft => soft.parse().ok(),
        })
        .ok_or_else(|| io::Error::other("no numeric \"Max open files\" line"))
}
