//! MLX's distributed engine (`mx.distributed`) through mlx-c: a [`Group`] of processes
//! (ranks) and its collectives as lazy array operations, so that they sit inside any
//! graph, `value_and_grad`'s included.
//!
//! Processes find each other as `mlx.launch` tells them: the ring backend reads
//! `MLX_RANK` and `MLX_HOSTFILE` (a JSON list, one `["host:port"]` per rank); MPI and NCCL
//! read their own launchers' variables.

use std::ffi::CString;
use std::time::Duration;

use mlx_rs::{Array, Dtype, Stream};

use crate::error::{Error, Result};
pub use crate::hosts::{SshTarget, create_private_file};

/// A distributed backend, by MLX's name for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum Backend {
    /// The first available.
    Any,
    /// TCP rings (`MLX_RANK`, `MLX_HOSTFILE`).
    Ring,
    /// MPI (`mpirun`).
    Mpi,
    /// NVIDIA's collectives (CUDA builds).
    Nccl,
}

/// A group of ranks. Cheap to share between threads of one process.
#[derive(Debug)]
pub struct Group {
    raw: mlx_sys::mlx_distributed_group,
}

// SAFETY: an MLX group is a reference-counted handle to a communicator that MLX itself
// uses from its own threads; lamina only reads its rank and size and passes it to ops.
unsafe impl Send for Group {}
// SAFETY: as above; no method mutates the handle.
unsafe impl Sync for Group {}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `raw` came from mlx-c and is freed once.
        unsafe {
            mlx_sys::mlx_distributed_group_free(self.raw);
        }
    }
}

fn failed(what: &str) -> Error {
    Error::Distributed(format!("{what} failed (MLX's message is on standard error)"))
}

impl Group {
    /// Whether `backend` is compiled into this MLX.
    pub fn is_available(backend: Backend) -> bool {
        let Ok(name) = CString::new(backend.to_string()) else { return false };
        // SAFETY: a valid C string for the call.
        unsafe { mlx_sys::mlx_distributed_is_available(name.as_ptr()) }
    }

    /// Joins the group the environment describes (see the module docs), waiting at most
    /// `timeout` for the other ranks. A process started without a launcher is a group of
    /// one with [`Backend::Any`].
    ///
    /// # Errors
    /// [`Error::Distributed`] when the backend is missing, the environment is incomplete,
    /// or the peers do not answer within `timeout` (the connecting thread is left behind;
    /// end the process).
    pub fn init(backend: Backend, timeout: Duration) -> Result<Group> {
        if !Self::is_available(backend) {
            return Err(Error::Distributed(format!("the `{backend}` backend is not in this MLX build")));
        }
        let name = CString::new(backend.to_string()).map_err(|_| Error::Internal("backend name"))?;
        let strict = backend != Backend::Any;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: `raw` is written by mlx-c; the name outlives the call.
            let result = unsafe {
                let mut raw = mlx_sys::mlx_distributed_group_new();
                let rc = mlx_sys::mlx_distributed_init(&mut raw, strict, name.as_ptr());
                if rc == 0 && !raw.ctx.is_null() { Ok(Group { raw }) } else { Err(rc) }
            };
            let _ = sender.send(result);
        });
        match receiver.recv_timeout(timeout) {
            Ok(Ok(group)) => Ok(group),
            Ok(Err(_)) => Err(Error::Distributed(format!(
                "the `{backend}` backend could not start: check MLX_RANK and MLX_HOSTFILE (or the launcher)"
            ))),
            Err(_) => Err(Error::Distributed(format!(
                "the `{backend}` backend's peers did not answer within {} s",
                timeout.as_secs_f32()
            ))),
        }
    }

    /// This process's rank, `0..size`.
    pub fn rank(&self) -> usize {
        // SAFETY: a live group.
        unsafe { mlx_sys::mlx_distributed_group_rank(self.raw).max(0) as usize }
    }

    /// How many ranks.
    pub fn size(&self) -> usize {
        // SAFETY: a live group.
        unsafe { mlx_sys::mlx_distributed_group_size(self.raw).max(1) as usize }
    }

    /// The subgroup of the ranks that pass the same `color`, ordered by `key`.
    ///
    /// # Errors
    /// [`Error::Distributed`] when the backend cannot split.
    pub fn split(&self, color: i32, key: i32) -> Result<Group> {
        // SAFETY: `raw` is written by mlx-c.
        unsafe {
            let mut raw = mlx_sys::mlx_distributed_group_new();
            if mlx_sys::mlx_distributed_group_split(&mut raw, self.raw, color, key) != 0 {
                return Err(failed("splitting the group"));
            }
            Ok(Group { raw })
        }
    }

    fn unary(
        &self,
        what: &str,
        x: &Array,
        op: unsafe extern "C" fn(
            *mut mlx_sys::mlx_array,
            mlx_sys::mlx_array,
            mlx_sys::mlx_distributed_group,
            mlx_sys::mlx_stream,
        ) -> std::os::raw::c_int,
    ) -> Result<Array> {
        let stream = Stream::default();
        // SAFETY: valid handles for the call; `out` is owned by the returned Array.
        unsafe {
            let mut out = mlx_sys::mlx_array_new();
            if op(&mut out, x.as_ptr(), self.raw, stream.as_ptr()) != 0 {
                mlx_sys::mlx_array_free(out);
                return Err(failed(what));
            }
            Ok(Array::from_ptr(out))
        }
    }

    /// The element-wise sum of `x` over the ranks (lazy; differentiable).
    ///
    /// # Errors
    /// [`Error::Distributed`] when MLX refuses the operation.
    pub fn all_sum(&self, x: &Array) -> Result<Array> {
        self.unary("all_sum", x, mlx_sys::mlx_distributed_all_sum)
    }

    /// The element-wise maximum of `x` over the ranks.
    ///
    /// # Errors
    /// As [`Group::all_sum`].
    pub fn all_max(&self, x: &Array) -> Result<Array> {
        self.unary("all_max", x, mlx_sys::mlx_distributed_all_max)
    }

    /// Every rank's `x` concatenated along the first axis, in rank order.
    ///
    /// # Errors
    /// As [`Group::all_sum`].
    pub fn all_gather(&self, x: &Array) -> Result<Array> {
        self.unary("all_gather", x, mlx_sys::mlx_distributed_all_gather)
    }

    /// Sends `x` to rank `dst`; the result is an array to evaluate (evaluating it sends).
    ///
    /// # Errors
    /// As [`Group::all_sum`]; a rank outside the group.
    pub fn send(&self, x: &Array, dst: usize) -> Result<Array> {
        let dst = self.peer(dst)?;
        let stream = Stream::default();
        // SAFETY: as in `unary`.
        unsafe {
            let mut out = mlx_sys::mlx_array_new();
            if mlx_sys::mlx_distributed_send(&mut out, x.as_ptr(), dst, self.raw, stream.as_ptr()) != 0 {
                mlx_sys::mlx_array_free(out);
                return Err(failed("send"));
            }
            Ok(Array::from_ptr(out))
        }
    }

    /// Receives an array of `shape` and `dtype` from rank `src`.
    ///
    /// # Errors
    /// As [`Group::all_sum`]; a rank outside the group.
    pub fn recv(&self, shape: &[i32], dtype: Dtype, src: usize) -> Result<Array> {
        let src = self.peer(src)?;
        let stream = Stream::default();
        // SAFETY: as in `unary`; the shape slice outlives the call.
        unsafe {
            let mut out = mlx_sys::mlx_array_new();
            let rc = mlx_sys::mlx_distributed_recv(
                &mut out,
                shape.as_ptr(),
                shape.len(),
                dtype.into(),
                src,
                self.raw,
                stream.as_ptr(),
            );
            if rc != 0 {
                mlx_sys::mlx_array_free(out);
                return Err(failed("recv"));
            }
            Ok(Array::from_ptr(out))
        }
    }

    /// Returns once every rank of the group has called it (an `all_sum` of one value,
    /// evaluated).
    ///
    /// # Errors
    /// As [`Group::all_sum`].
    pub fn barrier(&self) -> Result<()> {
        let one = Array::from_f32(1.0);
        self.all_sum(&one)?.eval()?;
        Ok(())
    }

    fn peer(&self, rank: usize) -> Result<i32> {
        if rank >= self.size() || rank == self.rank() {
            return Err(Error::Distributed(format!(
                "rank {rank} is not another rank of this group of {}",
                self.size()
            )));
        }
        i32::try_from(rank).map_err(|_| Error::Internal("rank"))
    }
}

/// `x`, evaluated only after `dependencies` (MLX's `depends`): evaluating the result
/// evaluates them too. A pipeline stage ties its `send` to its cache this way, so that a
/// prefill that evaluates only the caches still passes the hidden states on.
///
/// # Errors
/// [`Error::Distributed`] when MLX refuses the operation.
pub fn after(x: &Array, dependencies: &[Array]) -> Result<Array> {
    let dependencies: Vec<mlx_sys::mlx_array> = dependencies.iter().map(Array::as_ptr).collect();
    // SAFETY: the vectors copy the handles they are given (mlx-c retains them) and are
    // freed here; `out` is owned by the returned Array.
    unsafe {
        let inputs = mlx_sys::mlx_vector_array_new_value(x.as_ptr());
        let deps = mlx_sys::mlx_vector_array_new_data(dependencies.as_ptr(), dependencies.len());
        let mut results = mlx_sys::mlx_vector_array_new();
        let rc = mlx_sys::mlx_depends(&mut results, inputs, deps);
        mlx_sys::mlx_vector_array_free(inputs);
        mlx_sys::mlx_vector_array_free(deps);
        let mut out = mlx_sys::mlx_array_new();
        let got = rc == 0
            && mlx_sys::mlx_vector_array_size(results) == 1
            && mlx_sys::mlx_vector_array_get(&mut out, results, 0) == 0;
        mlx_sys::mlx_vector_array_free(results);
        if !got {
            mlx_sys::mlx_array_free(out);
            return Err(failed("depends"));
        }
        Ok(Array::from_ptr(out))
    }
}

/// Local ranks started as `mlx.launch -n N` starts them: a hostfile of loopback ports and
/// one process per rank with `MLX_RANK` and `MLX_HOSTFILE` set (and, unless set already,
/// `OPENBLAS_NUM_THREADS` and `LAMINA_THREADS` to the rank's share of the cores). The
/// hostfile is created exclusively under an unguessable name, readable by its owner only.
#[derive(Debug)]
pub struct LocalLaunch {
    /// The hostfile written for the ranks.
    pub hostfile: std::path::PathBuf,
    children: Vec<std::process::Child>,
}

/// Set by SIGINT or SIGTERM once [`end_ranks_on_interrupt`] installed its handler.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Makes SIGINT (Ctrl-C) and SIGTERM end the ranks of every [`LocalLaunch`] being waited
/// for (they run in process groups of their own, which the terminal's signal does not
/// reach), then return from the wait as if the deadline had passed.
pub fn end_ranks_on_interrupt() {
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Whether SIGINT or SIGTERM arrived since [`end_ranks_on_interrupt`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Ends a rank and the processes it started (its process group).
fn end(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signals the rank's own process group, which `start` created for it.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
}

/// Copies a rank's output, line by line, with its rank in front.
fn forward(rank: usize, from: impl std::io::Read, to_stderr: bool) {
    use std::io::BufRead;
    for line in std::io::BufReader::new(from).lines().map_while(std::result::Result::ok) {
        if to_stderr {
            eprintln!("[{rank}] {line}");
        } else {
            println!("[{rank}] {line}");
        }
    }
}

/// What one rank did.
#[derive(Debug)]
pub struct RankOutput {
    /// Its rank.
    pub rank: usize,
    /// Its exit status; `None` when it was killed at the deadline.
    pub status: Option<std::process::ExitStatus>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl LocalLaunch {
    /// Forwards every rank's output as it comes, each line prefixed `[rank]`, and waits
    /// as [`LocalLaunch::wait`] does. Returns each rank's exit status (`None`: killed).
    ///
    /// # Errors
    /// As [`LocalLaunch::wait`].
    pub fn stream(
        mut self,
        deadline: Duration,
        grace: Duration,
    ) -> Result<Vec<Option<std::process::ExitStatus>>> {
        let mut forwarders = Vec::new();
        for (rank, child) in self.children.iter_mut().enumerate() {
            if let Some(out) = child.stdout.take() {
                forwarders.push(std::thread::spawn(move || forward(rank, out, false)));
            }
            if let Some(err) = child.stderr.take() {
                forwarders.push(std::thread::spawn(move || forward(rank, err, true)));
            }
        }
        let outputs = self.wait(deadline, grace)?;
        for forwarder in forwarders {
            let _ = forwarder.join();
        }
        Ok(outputs.into_iter().map(|o| o.status).collect())
    }

    /// Writes a hostfile of `hosts` free loopback ports and starts `started` of those
    /// ranks (all of them normally), each as `command(rank)` with the variables set and
    /// its output captured.
    ///
    /// # Errors
    /// [`Error::Io`] when a port, the hostfile or a process cannot be had.
    pub fn start(
        hosts: usize,
        started: usize,
        command: impl FnMut(usize) -> std::process::Command,
    ) -> Result<Self> {
        let loopback = |source| Error::Io { path: std::path::PathBuf::from("127.0.0.1"), source };
        let listeners = (0..hosts)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(loopback)?;
        let addresses = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(loopback)?;
        drop(listeners);
        Self::start_at(&addresses, started, command)
    }

    /// Writes a hostfile of `addresses` (`host:port`, one per rank) and starts `started`
    /// of those ranks from this machine, each as `command(rank)` with the variables set
    /// and its output captured. A rank on another host is a command that reaches it (the
    /// launch example's `ssh`), which must set the variables there itself: see
    /// [`LocalLaunch::hostfile_json`].
    ///
    /// # Errors
    /// [`Error::Io`] when the hostfile or a process cannot be had.
    pub fn start_at(
        addresses: &[String],
        started: usize,
        mut command: impl FnMut(usize) -> std::process::Command,
    ) -> Result<Self> {
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path: path.clone(), source }
        };
        let json = Self::hostfile_json(addresses)?;
        let hostfile = create_private_file(&std::env::temp_dir(), "lamina-hosts", json.as_bytes())?;
        let mut children = Vec::with_capacity(started);
        // Ranks share this machine's cores (those this process may use): BLAS and kernel
        // threads beyond a rank's share spin against the other ranks' (measured: 2 pipeline
        // ranks on 2 cores decode 3.7x faster with one BLAS thread each). A value the caller
        // set is kept.
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let share = (cores / started.max(1)).max(1).to_string();
        for rank in 0..started.min(addresses.len()) {
            let mut command = command(rank);
            for variable in ["OPENBLAS_NUM_THREADS", "LAMINA_THREADS"] {
                if std::env::var_os(variable).is_none() {
                    command.env(variable, &share);
                }
            }
            // Its own process group, so that ending a rank ends what it started too.
            #[cfg(unix)]
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            let child = command
                .env("MLX_RANK", rank.to_string())
                .env("MLX_HOSTFILE", &hostfile)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(io(&hostfile))?;
            children.push(child);
        }
        Ok(LocalLaunch { hostfile, children })
    }

    /// The ring backend's hostfile for `addresses`: a JSON list with one `["host:port"]`
    /// per rank.
    ///
    /// # Errors
    /// [`Error::Internal`] only if JSON cannot be written.
    pub fn hostfile_json(addresses: &[String]) -> Result<String> {
        let ranks: Vec<[&str; 1]> = addresses.iter().map(|a| [a.as_str()]).collect();
        serde_json::to_string(&ranks).map_err(|_| Error::Internal("hostfile"))
    }

    /// Waits for every rank, killing those still running after `deadline` (or at once
    /// after an interrupt, see [`end_ranks_on_interrupt`]); when one rank fails the others
    /// are given `grace` to notice before they are killed.
    ///
    /// # Errors
    /// [`Error::Io`] when a process cannot be waited for.
    pub fn wait(mut self, deadline: Duration, grace: Duration) -> Result<Vec<RankOutput>> {
        let started = std::time::Instant::now();
        let mut failed_at: Option<std::time::Instant> = None;
        let io = |source| Error::Io { path: std::path::PathBuf::from("rank process"), source };
        // Drained while the ranks run: a rank writing more than a pipe holds would
        // otherwise block until it is killed.
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut text);
                }
                String::from_utf8_lossy(&text).into_owned()
            })
        };
        let readers: Vec<_> = self
            .children
            .iter_mut()
            .map(|child| {
                let out = child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>);
                let err = child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>);
                (drain(out), drain(err))
            })
            .collect();
        loop {
            let mut running = 0;
            for child in &mut self.children {
                match child.try_wait().map_err(io)? {
                    None => running += 1,
                    Some(status) if !status.success() => {
                        failed_at.get_or_insert_with(std::time::Instant::now);
                    }
                    Some(_) => {}
                }
            }
            let past_grace = failed_at.is_some_and(|t| t.elapsed() > grace);
            if running == 0 || started.elapsed() > deadline || past_grace || interrupted() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut outputs = Vec::with_capacity(self.children.len());
        for (rank, (mut child, (out, err))) in self.children.drain(..).zip(readers).enumerate() {
            let status = child.try_wait().map_err(io)?;
            if status.is_none() {
                end(&mut child);
            }
            child.wait().map_err(io)?;
            let text = |reader: std::thread::JoinHandle<String>| reader.join().unwrap_or_default();
            outputs.push(RankOutput { rank, status, stdout: text(out), stderr: text(err) });
        }
        let _ = std::fs::remove_file(&self.hostfile);
        Ok(outputs)
    }
}
