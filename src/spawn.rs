//! Starting a delegate plugin: a `vfork`-style clone that keeps `PR_SET_PDEATHSIG`.
//!
//! A delegate must not outlive a `multus` that the runtime SIGKILLs at its deadline (no
//! destructor runs then): an orphaned delegate that finishes its ADD after the runtime's
//! DEL would leave what it made (an interface, an IP) behind for good. So the child sets
//! `PR_SET_PDEATHSIG(SIGKILL)` before it execs the plugin.
//!
//! Why not `std` or `tokio::process`: that takes a `pre_exec` closure, and any `pre_exec`
//! makes std `fork()` instead of using `posix_spawn` (a `vfork`-like clone). Forking our
//! ~9 MiB static process copies its page tables, and the parent then takes ~80
//! copy-on-write faults per delegate (~1.6 µs each on the benchmark VM): 0.2–0.35 ms per ADD
//! with two delegates. Here, as in glibc's `posix_spawn`, the child shares our memory
//! (`CLONE_VM | CLONE_VFORK`: we are suspended until it has exec'd or exited) and runs
//! only raw syscalls on a small stack of its own until `execve`.
//!
//! Because the child shares our memory, between the clone and `execve` it
//! * runs no signal handler: we block every signal around the clone, so it starts with
//!   all of them blocked, and it resets every disposition that has a handler (and SIGPIPE,
//!   which Rust ignores) to the default before it unblocks them;
//! * touches no allocator, lock or shared mutable state: `argv` and `envp` are built
//!   before the clone, it reads only `ChildArgs` and writes only its `failure` slot (and
//!   the errno of the thread it was cloned from, which is suspended and reads no errno
//!   after a clone that succeeded);
//! * reports a failure as an errno in `failure` and exits 127; we read it once resumed,
//!   reap the child and return the error.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that spawned the child exits, not the
//! process: spawn from a thread that lives as long as the child may (the plugin spawns
//! from its main thread, which runs the current-thread runtime until the process exits).

use std::ffi::{CString, OsStr, c_char, c_int, c_long, c_void};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Output};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, getpid, pipe2};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::unix::pipe;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("spawn.rs describes the kernel's signal structures of x86_64 and aarch64 only");

/// The exit code of a child that could not exec (the shell's "cannot execute").
const EXIT_CANNOT_EXEC: c_int = 127;

/// The child's `failure` when it found itself orphaned before `execve`: not an errno.
const PARENT_GONE: c_int = -1;

/// The child's stack until `execve`. Its frames took 0.25 KiB in a release build and
/// 1.2 KiB in a debug one (measured; no recursion, and no signal handler can run on it):
/// 16 KiB leaves a wide margin.
const CHILD_STACK_BYTES: usize = 16 * 1024;

/// Signals are numbered 1..=64 (the kernel's `_NSIG` is 64 on x86_64 and aarch64)...
const LAST_SIGNAL: c_int = 64;
/// ...and its `sigset_t`, the size `rt_sigaction` and `rt_sigprocmask` take, is 8 bytes.
type KernelSigset = u64;
const KERNEL_SIGSET_BYTES: c_long = size_of::<KernelSigset>() as c_long;

/// The kernel's `struct sigaction` (not libc's, which has a larger mask) on x86_64 and
/// aarch64. All zeros is the default disposition.
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: usize,
    flags: std::ffi::c_ulong,
    restorer: usize,
    mask: KernelSigset,
}

/// A started child: its pipes, its exit, and SIGKILL if dropped before it was reaped.
#[derive(Debug)]
pub struct Child {
    process: Process,
    /// The child's pidfd: readable once it has exited.
    exit: AsyncFd<OwnedFd>,
    stdin: Option<pipe::Sender>,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
}

/// Start `path` with `argv = [path]`, exactly the environment `env`, stdin, stdout and
/// stderr piped and no other descriptor of ours (Rust, tokio and this crate open theirs
/// close-on-exec), signals at their defaults and unblocked, and `PR_SET_PDEATHSIG(SIGKILL)`
/// tied to the calling thread.
///
/// Returns once the child has exec'd `path`; an exec that failed is its errno (`ENOENT`,
/// `EACCES`, ...), and that child has been reaped. Must run within a tokio runtime with I/O
/// enabled (an error otherwise).
pub fn spawn<K, V>(path: &Path, env: impl IntoIterator<Item = (K, V)>) -> io::Result<Child>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    // The pipes and the pidfd register with the runtime's reactor: tokio panics without one.
    tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let image = ExecImage::new(path, env)?;
    let (stdin_read, stdin) = pipe2(OFlag::O_CLOEXEC)?;
    let (stdout, stdout_write) = pipe2(OFlag::O_CLOEXEC)?;
    let (stderr, stderr_write) = pipe2(OFlag::O_CLOEXEC)?;
    let stdio = [above_stdio(stdin_read)?, above_stdio(stdout_write)?, above_stdio(stderr_write)?];
    let stdin = pipe::Sender::from_owned_fd_unchecked(nonblocking(stdin)?)?;
    let stdout = pipe::Receiver::from_owned_fd_unchecked(nonblocking(stdout)?)?;
    let stderr = pipe::Receiver::from_owned_fd_unchecked(nonblocking(stderr)?)?;
    let (process, pidfd) = clone_exec(&image, stdio.each_ref().map(|fd| fd.as_raw_fd()))?;
    // Our copies of the child's ends: with them open we would never see its stdout's end.
    drop(stdio);
    // SAFETY: the OwnedFd is open and stays the same descriptor until the AsyncFd drops it
    // (nothing takes it out or swaps it).
    let exit = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }?;
    Ok(Child { process, exit, stdin: Some(stdin), stdout: Some(stdout), stderr: Some(stderr) })
}

impl Child {
    /// The child's pid (another process's once the child is reaped).
    pub fn id(&self) -> u32 {
        self.process.pid.as_raw().unsigned_abs()
    }

    /// Feed `input` to the child's stdin and close it, read its stdout and stderr to their
    /// ends, and wait for its exit, all at once: a large input never deadlocks on a full
    /// pipe. A child that exits (or closes its stdin) before reading all of `input` is not
    /// an error.
    pub async fn output(&mut self, input: &[u8]) -> io::Result<Output> {
        let stdin = self.stdin.take();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                let _ = stdin.write_all(input).await;
            }
            Ok(())
        };
        let stdout = read_to_end(self.stdout.take());
        let stderr = read_to_end(self.stderr.take());
        let ((), stdout, stderr, status) = tokio::try_join!(feed, stdout, stderr, self.wait())?;
        Ok(Output { status, stdout, stderr })
    }

    /// Wait for the child's exit and reap it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.process.reap(libc::WNOHANG)? {
                return Ok(status);
            }
            // The pidfd turns readable when the child has become a zombie, ready to reap.
            self.exit.readable().await?.clear_ready();
        }
    }

    /// SIGKILL the child and reap it.
    pub async fn kill(&mut self) -> io::Result<ExitStatus> {
        self.process.kill()?;
        self.wait().await
    }
}

async fn read_to_end(pipe: Option<pipe::Receiver>) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        pipe.read_to_end(&mut bytes).await?;
    }
    Ok(bytes)
}

/// Our child until it is reaped: SIGKILLed when dropped before, and reaped if it is dead
/// by then (if not, it stays a zombie until we exit, which the plugin does right after).
#[derive(Debug)]
struct Process {
    pid: Pid,
    status: Option<ExitStatus>,
}

impl Process {
    /// Its status once it has exited (and is reaped); `None` if it still runs under
    /// `WNOHANG`.
    fn reap(&mut self, options: c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw = 0;
        loop {
            // SAFETY: `raw` is a valid place for the status, and `pid` names our own child,
            // not reaped yet (`status` is None), so no other process can hold its pid.
            let reaped = unsafe { libc::waitpid(self.pid.as_raw(), &mut raw, options) };
            if reaped == 0 {
                return Ok(None);
            }
            if reaped > 0 {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                return Ok(Some(status));
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    fn kill(&self) -> io::Result<()> {
        if self.status.is_some() {
            // Reaped: its pid may be another process's by now.
            return Ok(());
        }
        Ok(kill(self.pid, Signal::SIGKILL)?)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
            let _ = self.reap(libc::WNOHANG);
        }
    }
}

/// The child's end of a pipe, moved above 0, 1 and 2 if it is one of them (a process
/// started with a standard descriptor closed). The child then dups its three ends onto
/// 0, 1 and 2 in turn without overwriting an end it has yet to dup, and never dups a
/// descriptor onto itself (which would leave it close-on-exec).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let moved = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// Our end of a pipe in non-blocking mode, as the reactor needs it (the child's end stays
/// blocking: a separate open file description).
fn nonblocking(fd: OwnedFd) -> io::Result<OwnedFd> {
    fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok(fd)
}

/// What the child passes to `execve`, built before the clone: the child cannot allocate.
struct ExecImage {
    path: CString,
    /// `[path, NULL]`.
    argv: [*const c_char; 2],
    /// `NAME=value` strings, NULL-terminated.
    envp: Vec<*const c_char>,
    /// Owns the strings `envp` points to (a `CString`'s bytes stay put when it moves).
    _env: Vec<CString>,
}

impl ExecImage {
    fn new<K, V>(path: &Path, env: impl IntoIterator<Item = (K, V)>) -> io::Result<ExecImage>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let path = c_string(path.as_os_str().as_bytes().to_vec())?;
        let env = env
            .into_iter()
            .map(|(name, value)| {
                let mut entry = name.as_ref().as_bytes().to_vec();
                entry.push(b'=');
                entry.extend_from_slice(value.as_ref().as_bytes());
                c_string(entry)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let envp = env.iter().map(|entry| entry.as_ptr()).chain([std::ptr::null()]).collect();
        let argv = [path.as_ptr(), std::ptr::null()];
        Ok(ExecImage { path, argv, envp, _env: env })
    }
}

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the program path or an environment variable")
    })
}

/// Everything the child reads, in the frame of [`clone_exec`], which cannot return before
/// the child has exec'd or exited.
struct ChildArgs<'a> {
    image: &'a ExecImage,
    /// The descriptors to dup onto 0, 1 and 2: all above 2.
    stdio: [RawFd; 3],
    /// Our pid: the child's parent unless we died before it set PDEATHSIG.
    parent: Pid,
    /// 0 while all goes well; the errno of the step that failed, or [`PARENT_GONE`].
    failure: &'a AtomicI32,
}

/// Clone the child, which execs `image` with `stdio` as its 0, 1 and 2; return once it has
/// exec'd, with the child and its pidfd.
fn clone_exec(image: &ExecImage, stdio: [RawFd; 3]) -> io::Result<(Process, OwnedFd)> {
    let failure = AtomicI32::new(0);
    let args = ChildArgs { image, stdio, parent: getpid(), failure: &failure };
    let mut stack = MaybeUninit::<[u8; CHILD_STACK_BYTES]>::uninit();
    // The stack grows down on x86_64 and aarch64: clone takes its top, 16-byte aligned.
    let top = stack.as_mut_ptr().cast::<u8>().wrapping_add(CHILD_STACK_BYTES);
    let top = top.wrapping_sub(top.addr() % 16);
    let mut pidfd: c_int = -1;
    // The child inherits this mask: no signal can reach it before it has reset the handlers.
    let saved_mask = set_signal_mask(KernelSigset::MAX)?;
    // SAFETY: `child_main` only reads `args` and writes `failure` (atomically), both in this
    // frame, which outlives the child's use of them: CLONE_VFORK suspends this thread until
    // the child has exec'd (its memory is then a new image) or exited. The child runs on
    // `stack`, part of this frame too, which nothing else touches meanwhile; `top` lies
    // within it (or one past it) and is aligned as the ABI wants. `pidfd` is a valid place
    // for the kernel to store the pidfd (CLONE_PIDFD); it is not combined with
    // CLONE_PARENT_SETTID, which would use the same argument.
    let pid = unsafe {
        libc::clone(
            child_main,
            top.cast::<c_void>(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            (&raw const args).cast_mut().cast::<c_void>(),
            &raw mut pidfd,
        )
    };
    let clone_error = io::Error::last_os_error();
    let restored = set_signal_mask(saved_mask);
    if pid == -1 {
        return Err(clone_error);
    }
    // SAFETY: the clone succeeded, so the kernel stored a new pidfd (CLONE_PIDFD, opened
    // close-on-exec) that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let mut process = Process { pid: Pid::from_raw(pid), status: None };
    match failure.load(Ordering::Acquire) {
        0 => {}
        errno => {
            // It failed before exec: it is exiting, so this wait is short.
            process.reap(0)?;
            return Err(if errno == PARENT_GONE {
                io::Error::other("multus exited before the delegate started")
            } else {
                io::Error::from_raw_os_error(errno)
            });
        }
    }
    restored?;
    Ok((process, pidfd))
}

/// Set this thread's signal mask; returns the previous one. The raw syscall, as glibc's
/// `posix_spawn` does: its `pthread_sigmask` never blocks glibc's two internal signals.
fn set_signal_mask(mask: KernelSigset) -> io::Result<KernelSigset> {
    let mut previous: KernelSigset = 0;
    // SAFETY: both pointers are valid for a kernel sigset_t of the size passed.
    let result = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            c_long::from(libc::SIG_SETMASK),
            &raw const mask,
            &raw mut previous,
            KERNEL_SIGSET_BYTES,
        )
    };
    if result == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(previous)
}

/// The child, from the clone to `execve`: see the module documentation for its rules.
extern "C" fn child_main(args: *mut c_void) -> c_int {
    // SAFETY: `args` is the `ChildArgs` that `clone_exec` passed to clone, alive in its
    // suspended frame until we exec or exit.
    let args = unsafe { &*args.cast_const().cast::<ChildArgs>() };
    let failure = exec_child(args);
    args.failure.store(failure, Ordering::Release);
    EXIT_CANNOT_EXEC
}

/// Prepare the child and exec `args.image`; returns only when a step failed: its errno,
/// or [`PARENT_GONE`].
fn exec_child(args: &ChildArgs) -> c_int {
    if let Err(failure) = prepare(args) {
        return failure;
    }
    let image = args.image;
    // SAFETY: the path, argv and envp arrays are NUL-terminated and owned by `image`,
    // alive in the suspended parent frame; on success nothing of ours runs any more.
    unsafe { libc::syscall(libc::SYS_execve, image.path.as_ptr(), image.argv.as_ptr(), image.envp.as_ptr()) };
    // execve returns only when it failed.
    errno()
}

/// Signals to their defaults and unblocked, the pipes on 0, 1 and 2, PDEATHSIG set.
fn prepare(args: &ChildArgs) -> Result<(), c_int> {
    let default = KernelSigaction::default();
    for signal in 1..=LAST_SIGNAL {
        let mut current = KernelSigaction::default();
        // SAFETY: a query into a valid kernel sigaction of the size the kernel expects.
        unsafe {
            raw_syscall(libc::SYS_rt_sigaction, [signal.into(), 0, address(&raw mut current), KERNEL_SIGSET_BYTES])?;
        }
        let runs_code = current.handler != libc::SIG_DFL && current.handler != libc::SIG_IGN;
        if runs_code || (signal == libc::SIGPIPE && current.handler == libc::SIG_IGN) {
            // SAFETY: sets the default disposition from a valid kernel sigaction.
            unsafe {
                raw_syscall(
                    libc::SYS_rt_sigaction,
                    [signal.into(), address(&raw const default), 0, KERNEL_SIGSET_BYTES],
                )?;
            }
        }
    }
    let unblocked: KernelSigset = 0;
    // SAFETY: sets the mask from a valid kernel sigset_t; no handler is left to run.
    unsafe {
        raw_syscall(
            libc::SYS_rt_sigprocmask,
            [libc::SIG_SETMASK.into(), address(&raw const unblocked), 0, KERNEL_SIGSET_BYTES],
        )?;
    }
    for (target, &fd) in [0, 1, 2].iter().zip(&args.stdio) {
        // SAFETY: dup3 of a descriptor we own (fd > 2, so never onto itself); the copy is
        // not close-on-exec.
        unsafe { raw_syscall(libc::SYS_dup3, [fd.into(), *target, 0, 0])? };
    }
    // SAFETY: prctl with integer arguments.
    unsafe { raw_syscall(libc::SYS_prctl, [libc::PR_SET_PDEATHSIG.into(), libc::SIGKILL.into(), 0, 0])? };
    // If we were orphaned before the prctl, nothing will ever kill or wait for us.
    // SAFETY: getppid takes no arguments (the zeros are ignored).
    if unsafe { raw_syscall(libc::SYS_getppid, [0; 4])? } != c_long::from(args.parent.as_raw()) {
        return Err(PARENT_GONE);
    }
    Ok(())
}

/// A pointer as a syscall argument (exposed: the kernel reads or writes through it).
fn address<T>(pointer: *const T) -> c_long {
    pointer.expose_provenance() as c_long
}

/// A syscall with up to four arguments (the unused ones 0), its errno on failure.
///
/// # Safety
///
/// The arguments must be valid for `number`.
unsafe fn raw_syscall(number: c_long, [a, b, c, d]: [c_long; 4]) -> Result<c_long, c_int> {
    // SAFETY: the caller's promise; libc's `syscall` wrapper is async-signal-safe.
    let result = unsafe { libc::syscall(number, a, b, c, d) };
    if result == -1 {
        return Err(errno());
    }
    Ok(result)
}

/// The errno of the last failed call; read without std, which may not run in the child.
fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: (&str, &str) = ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");

    /// `/bin/sh` running `script` (read from its stdin).
    async fn sh(script: &str) -> Output {
        let mut child = spawn(Path::new("/bin/sh"), [PATH]).unwrap();
        child.output(script.as_bytes()).await.unwrap()
    }

    #[tokio::test]
    async fn captures_stdout_and_stderr_and_feeds_a_large_stdin_whole() {
        let output = sh("echo out; echo err >&2").await;
        assert!(output.status.success());
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err\n");
        let input: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut cat = spawn(Path::new("/bin/cat"), [PATH]).unwrap();
        let output = cat.output(&input).await.unwrap();
        assert!(output.status.success());
        assert!(output.stdout == input, "cat returned {} of {} bytes", output.stdout.len(), input.len());
        // A child that exits without reading its stdin is no error of ours.
        let mut true_ = spawn(Path::new("/bin/true"), [PATH]).unwrap();
        assert!(true_.output(&input).await.unwrap().status.success());
    }

    #[tokio::test]
    async fn reports_the_exit_code_and_the_killing_signal() {
        assert_eq!(sh("exit 3").await.status.code(), Some(3));
        let killed = sh("kill -TERM $$").await.status;
        assert_eq!((killed.code(), killed.signal()), (None, Some(libc::SIGTERM)));
    }

    #[tokio::test]
    async fn child_has_default_sigpipe_no_blocked_signal_and_exactly_our_environment() {
        // A mask of ours must not reach the child (the test harness ignores SIGPIPE already).
        let mut blocked = nix::sys::signal::SigSet::empty();
        blocked.add(Signal::SIGUSR1);
        let mut saved = nix::sys::signal::SigSet::empty();
        nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut saved))
            .unwrap();
        // The shell reads its own status with builtins only: while it starts a child (grep)
        // it blocks every signal for a moment, and a child could see that.
        let status =
            sh(r#"while IFS= read -r l; do case "$l" in SigBlk:*|SigIgn:*) echo "$l";; esac; done < /proc/$$/status"#)
                .await;
        nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&saved), None).unwrap();
        let status = String::from_utf8(status.stdout).unwrap();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
        };
        assert_eq!(field("SigBlk:"), 0, "{status}");
        assert_eq!(field("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE ignored: {status}");

        let env = [PATH, ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=a b"), ("EMPTY", "")];
        let mut child = spawn(Path::new("/bin/sh"), env).unwrap();
        let output = child.output(b"cat /proc/$$/environ").await.unwrap();
        let expected: Vec<u8> = env.iter().flat_map(|(k, v)| format!("{k}={v}\0").into_bytes()).collect();
        assert_eq!(String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&expected));
    }

    /// The processes whose parent is this process and whose name is `comm`.
    fn our_children_named(comm: &str) -> Vec<String> {
        let us = std::process::id().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
            .filter(|stat| {
                // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { return false };
                let ppid = stat[close + 1..].split_whitespace().nth(1);
                &stat[open + 1..close] == comm && ppid == Some(us.as_str())
            })
            .collect()
    }

    /// `spawn(path)` on a thread of its own named `thread` (which its child inherits as its
    /// name): its error, and this process's children of that name afterwards.
    fn spawn_error_on_thread(thread: &str, path: &Path) -> (io::Error, Vec<String>) {
        let path = path.to_path_buf();
        let error = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let _in_runtime = runtime.enter();
                spawn(&path, [PATH]).unwrap_err()
            })
            .unwrap()
            .join()
            .unwrap();
        (error, our_children_named(thread))
    }

    #[test]
    fn a_failed_exec_is_its_errno_and_leaves_no_zombie() {
        let (error, zombies) = spawn_error_on_thread("spawn-enoent", Path::new("/nonexistent/plugin"));
        assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{error}");
        assert_eq!(zombies, Vec::<String>::new());
        // Not executable (even for root, which needs one x bit).
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "#!/bin/sh\n").unwrap();
        let (error, zombies) = spawn_error_on_thread("spawn-eacces", file.path());
        assert_eq!(error.raw_os_error(), Some(libc::EACCES), "{error}");
        assert_eq!(zombies, Vec::<String>::new());
    }

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        assert!(spawn(Path::new("/bin/true"), [PATH]).is_err());
    }

    /// Whether `pid`, our child, ends killed by SIGKILL (or is already reaped) within 10 s.
    fn ends_by_sigkill(pid: u32) -> bool {
        let pid = Pid::from_raw(pid as i32);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => std::thread::sleep(std::time::Duration::from_millis(10)),
                Ok(nix::sys::wait::WaitStatus::Signaled(_, Signal::SIGKILL, _)) | Err(nix::errno::Errno::ECHILD) => {
                    return true;
                }
                other => panic!("{pid}: {other:?}"),
            }
        }
        let _ = kill(pid, Signal::SIGKILL);
        false
    }

    /// A child running `sleep 30` (its stdin fed and closed).
    async fn sleeper() -> Child {
        let mut child = spawn(Path::new("/bin/sh"), [PATH]).unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"exec sleep 30\n").await.unwrap();
        child
    }

    #[tokio::test]
    async fn dropping_a_running_child_kills_it() {
        let child = sleeper().await;
        let pid = child.id();
        drop(child);
        assert!(ends_by_sigkill(pid), "{pid} survived its drop");
    }

    #[tokio::test]
    async fn kill_ends_and_reaps_the_child() {
        let mut child = sleeper().await;
        assert_eq!(child.kill().await.unwrap().signal(), Some(libc::SIGKILL));
        assert!(!Path::new(&format!("/proc/{}", child.id())).exists(), "not reaped");
    }

    /// PDEATHSIG fires when the thread that spawned the child exits (the plugin spawns from
    /// its main thread, which lives until the process exits). A child that outlives its
    /// `Child` without a kill (leaked here) dies with that thread.
    #[test]
    fn the_spawning_thread_exiting_kills_the_child() {
        let pid = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let child = runtime.block_on(sleeper());
            let pid = child.id();
            std::mem::forget(child);
            pid
        })
        .join()
        .unwrap();
        assert!(ends_by_sigkill(pid), "{pid} outlived the thread that spawned it");
    }

    /// Run by `pipes_may_land_on_descriptors_0_1_2` in a process of its own, as it closes
    /// the standard descriptors.
    #[test]
    #[ignore = "closes this process's stdin, stdout and stderr: run in a process of its own"]
    fn with_0_1_2_closed() {
        if std::env::var_os("MULTUS_SPAWN_TEST_CLOSED_STDIO").is_none() {
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            for fd in 0..3 {
                nix::unistd::close(fd).unwrap();
            }
            // The stdin pipe now takes 0 and 1, the stdout pipe 2 and one above.
            let output = sh("echo out; echo err >&2").await;
            assert_eq!((output.stdout.as_slice(), output.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
            let mut cat = spawn(Path::new("/bin/cat"), [PATH]).unwrap();
            assert_eq!(cat.output(b"in").await.unwrap().stdout, b"in");
        })
    }

    #[test]
    fn pipes_may_land_on_descriptors_0_1_2() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["spawn::tests::with_0_1_2_closed", "--exact", "--ignored", "--test-threads=1"])
            .env("MULTUS_SPAWN_TEST_CLOSED_STDIO", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(0), "{status}");
    }
}
