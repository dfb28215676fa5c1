//! MLX's distributed engine over loopback: two ranks of the ring backend, each a copy of
//! this test binary started with `MLX_RANK` and `MLX_HOSTFILE` (as `mlx.launch` starts
//! them), run the collectives; a rank whose peer never comes fails within its timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lamina_core::distributed::{Backend, Group};
use mlx_rs::{Array, Dtype};

/// Set in the ranks this test starts.
const RANK_RUN: &str = "LAMINA_DISTRIBUTED_RANK_RUN";

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Starts `ranks` of the `hostfile_ranks` listed in a fresh hostfile, each running `test`
/// alone, and waits for them (killed after 60 s).
fn launch(test: &str, ranks: usize, hostfile_ranks: usize) -> Vec<Output> {
    let hosts: Vec<Vec<String>> =
        free_ports(hostfile_ranks).iter().map(|p| vec![format!("127.0.0.1:{p}")]).collect();
    let hostfile = std::env::temp_dir().join(format!("lamina-hosts-{}-{test}.json", std::process::id()));
    std::fs::write(&hostfile, serde_json::to_string(&hosts).unwrap()).unwrap();
    let children: Vec<_> = (0..ranks)
        .map(|rank| {
            Command::new(std::env::current_exe().unwrap())
                .args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env(RANK_RUN, "1")
                .env("MLX_RANK", rank.to_string())
                .env("MLX_HOSTFILE", &hostfile)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    children
        .into_iter()
        .map(|mut child| {
            while child.try_wait().unwrap().is_none() {
                if started.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            child.wait_with_output().unwrap()
        })
        .collect()
}

fn values(a: &Array) -> Vec<f32> {
    a.as_slice::<f32>().to_vec()
}

#[test]
fn two_ranks_sum_gather_send_and_receive() {
    if std::env::var_os(RANK_RUN).is_none() {
        for (rank, out) in launch("two_ranks_sum_gather_send_and_receive", 2, 2).iter().enumerate() {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "rank {rank}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
            assert!(stdout.contains(&format!("rank {rank} of 2: ok")), "{stdout}");
        }
        return;
    }
    let group = Group::init(Backend::Ring, Duration::from_secs(30)).unwrap();
    let (rank, size) = (group.rank(), group.size());
    assert_eq!(size, 2);
    let r = rank as f32;
    let x = Array::from_slice(&[1.0 + r, 10.0 * r, -r], &[3]);
    assert_eq!(values(&group.all_sum(&x).unwrap()), [3.0, 10.0, -1.0]);
    assert_eq!(values(&group.all_max(&x).unwrap()), [2.0, 10.0, 0.0]);
    let gathered = group.all_gather(&x.reshape(&[1, 3]).unwrap()).unwrap();
    assert_eq!(gathered.shape(), [2, 3]);
    assert_eq!(values(&gathered), [1.0, 0.0, 0.0, 2.0, 10.0, -1.0]);
    if rank == 0 {
        let sent = group.send(&Array::from_slice(&[4.0f32, 5.0], &[2]), 1).unwrap();
        mlx_rs::transforms::eval([&sent]).unwrap();
    } else {
        let got = group.recv(&[2], Dtype::Float32, 0).unwrap();
        assert_eq!(values(&got), [4.0, 5.0]);
    }
    // Differentiable: MLX's vjp of all_sum passes the cotangent through (each rank's
    // gradient of sum(all_sum(x) * w) is its own w; data-parallel training sums the
    // gradients explicitly).
    let w = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]);
    let f = |inputs: &[Array]| -> Vec<Array> {
        let summed = group.all_sum(&inputs[0]).unwrap();
        vec![summed.multiply(&w).unwrap().sum(None).unwrap()]
    };
    let (_, grads) = mlx_rs::transforms::vjp(f, std::slice::from_ref(&x), &[Array::from_f32(1.0)]).unwrap();
    assert_eq!(values(&grads[0]), [1.0, 2.0, 3.0]);
    assert!(group.send(&x, rank).is_err(), "sending to oneself is refused");
    println!("rank {rank} of {size}: ok");
}

#[test]
fn a_rank_whose_peer_never_comes_fails_within_its_timeout() {
    if std::env::var_os(RANK_RUN).is_none() {
        let started = Instant::now();
        let outs = launch("a_rank_whose_peer_never_comes_fails_within_its_timeout", 1, 2);
        let stdout = String::from_utf8_lossy(&outs[0].stdout);
        assert!(outs[0].status.success(), "{stdout}\n{}", String::from_utf8_lossy(&outs[0].stderr));
        assert!(stdout.contains("failed cleanly"), "{stdout}");
        assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
        return;
    }
    let err = Group::init(Backend::Ring, Duration::from_secs(3)).unwrap_err();
    assert!(matches!(err, lamina_core::Error::Distributed(_)), "{err}");
    println!("failed cleanly: {err}");
}

#[test]
fn a_process_without_a_launcher_is_a_group_of_one() {
    if std::env::var_os(RANK_RUN).is_some() {
        return;
    }
    let group = Group::init(Backend::Any, Duration::from_secs(10)).unwrap();
    assert_eq!((group.rank(), group.size()), (0, 1));
    let x = Array::from_slice(&[1.0f32, 2.0], &[2]);
    assert_eq!(values(&group.all_sum(&x).unwrap()), [1.0, 2.0]);
    assert!(group.send(&x, 0).is_err());
    assert!("ring".parse::<Backend>().is_ok() && "gloo".parse::<Backend>().is_err());
}
