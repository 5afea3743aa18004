//! A child process of this same example, spoken to by lines on its stdin and stdout: the
//! driver's handle on it, and [`say`] for the child's side.

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running copy of this executable in another role; killed when dropped.
pub struct ChildProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl ChildProcess {
    /// Starts `current_exe() args...`; its stderr goes to ours.
    pub fn spawn(name: &str, args: &[String]) -> Result<Self, Box<dyn Error>> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("child has no stdout")?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
        })
    }

    /// The process id, for /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one line to the child's stdin.
    pub fn send(&mut self, line: &str) -> Result<(), Box<dyn Error>> {
        let stdin = self.stdin.as_mut().ok_or("child's stdin is closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits up to `timeout` for the next line; it must start with `word`, which is cut off.
    pub fn expect(&mut self, word: &str, timeout: Duration) -> Result<String, Box<dyn Error>> {
        self.try_expect(word, timeout)?.ok_or_else(|| {
            format!(
                "{} said nothing for {timeout:?}; expected {word}",
                self.name
            )
            .into()
        })
    }

    /// Like [`Self::expect`], but `None` on timeout, so the caller can nudge the child. Progress
    /// lines (`burst N`) are skipped unless `word` is `burst`.
    pub fn try_expect(
        &mut self,
        word: &str,
        timeout: Duration,
    ) -> Result<Option<String>, Box<dyn Error>> {
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(wait) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    return Err(
                        format!("{} exited ({status}) before saying {word}", self.name).into(),
                    );
                }
            };
            if let Some(rest) = line.strip_prefix(word) {
                return Ok(Some(rest.trim().to_owned()));
            }
            if !line.starts_with(PROGRESS) {
                return Err(format!("{} said {line:?}; expected {word}", self.name).into());
            }
        }
    }
}

/// The word that starts a client's progress lines.
pub const PROGRESS: &str = "burst";

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Closing stdin asks the child to finish; a short grace, then it is killed.
        drop(self.stdin.take());
        for _ in 0..20 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

/// Writes one protocol line to stdout, at once.
pub fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
