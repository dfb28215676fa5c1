//! MLX's distributed engine over loopback: two ranks of the ring backend, each a copy of
//! this test binary started with `MLX_RANK` and `MLX_HOSTFILE` (as `mlx.launch` starts
//! them), run the collectives; a rank whose peer never comes fails within its timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use lamina_core::distributed::{Backend, Group, LocalLaunch, RankOutput};
use mlx_rs::{Array, Dtype};

/// Set in the ranks this test starts.
const RANK_RUN: &str = "LAMINA_DISTRIBUTED_RANK_RUN";

/// Starts `started` of `hosts` ranks, each running `test` alone, and waits (60 s at most).
fn launch(test: &str, started: usize, hosts: usize) -> Vec<RankOutput> {
    let command = |_| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.args([test, "--exact", "--nocapture", "--test-threads=1"]).env(RANK_RUN, "1");
        command
    };
    LocalLaunch::start(hosts, started, command)
        .unwrap()
        .wait(Duration::from_secs(60), Duration::from_secs(10))
        .unwrap()
}

fn values(a: &Array) -> Vec<f32> {
    a.as_slice::<f32>().to_vec()
}

#[test]
fn two_ranks_sum_gather_send_and_receive() {
    if std::env::var_os(RANK_RUN).is_none() {
        for out in launch("two_ranks_sum_gather_send_and_receive", 2, 2) {
            let (rank, stdout) = (out.rank, &out.stdout);
            assert!(out.status.is_some_and(|s| s.success()), "rank {rank}: {stdout}\n{}", out.stderr);
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
        let stdout = &outs[0].stdout;
        assert!(outs[0].status.is_some_and(|s| s.success()), "{stdout}\n{}", outs[0].stderr);
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
