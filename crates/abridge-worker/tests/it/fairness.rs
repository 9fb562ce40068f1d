//! Fair share across tenants: within a priority the fleet shares out by tenant first (by the
//! operator's weights), then by batch within the tenant, so splitting work into many batches
//! buys a tenant nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abridge_control::{EnqueueOnce, EnqueueRequest, Owner};
use abridge_core::input::BatchInput;
use abridge_core::{BatchId, Priority, WorkerId};
use abridge_store::tenants::TenantPolicy;
use abridge_worker::Worker;

use crate::support::*;

async fn enqueue_as(w: &Worker, tenant: &str, lines: &str) -> BatchId {
    w.store.ensure_tenant(tenant, "whsec_test").await.unwrap();
    let policy = w.store.tenant(tenant).await.unwrap().unwrap().policy;
    let done = abridge_control::enqueue_once(
        &w.store,
        &w.queue,
        &w.settings.queue,
        BatchInput::from_lines(lines),
        EnqueueRequest {
            priority: Priority::Normal,
            ..Default::default()
        },
        Some(Owner {
            tenant: Some(tenant),
            policy: Some(&policy),
            webhook_url: None,
            idempotency: None,
        }),
    )
    .await
    .unwrap();
    match done {
        EnqueueOnce::Created(d) | EnqueueOnce::Replayed { done: d, .. } => d.batch_id,
    }
}

#[tokio::test]
async fn a_tenant_with_twenty_batches_gets_no_more_than_a_tenant_with_one() {
    let order: Arc<Mutex<Vec<BatchId>>> = Arc::default();
    let seen = order.clone();
    let p = processor(move |job: abridge_worker::Job| {
        seen.lock().unwrap().push(job.batch_id);
        async { ok("x") }
    });
    let (_env, w) = env_and_worker(p, |_| {}).await;
    let mut a = Vec::new();
    for i in 0..20 {
        let prefix = char::from(b'A' + i);
        a.push(enqueue_as(&w, "acme", &video_lines(prefix, 500)).await);
    }
    let b = enqueue_as(&w, "globex", &video_lines('z', 50)).await;

    let running = Running::start(w.clone(), 8);
    wait_batch_finished(&w, b, Duration::from_secs(60)).await;
    let done = order.lock().unwrap().clone();
    running.stop().await;
    // Counted up to the moment globex's last item started.
    let last_b = done.iter().rposition(|id| *id == b).unwrap();
    let b_done = done[..=last_b].iter().filter(|id| **id == b).count();
    let a_done = done[..=last_b].iter().filter(|id| a.contains(id)).count();
    assert_eq!(b_done, 50);
    assert!(
        a_done <= b_done + 100,
        "globex's 50 items finished while acme finished {a_done}: acme's 20 batches took 20 shares"
    );
}

#[tokio::test]
async fn tenants_share_the_queue_by_their_weights() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let heavy = enqueue_as(&w, "heavy", &video_lines('h', 2_000)).await;
    let light = enqueue_as(&w, "light", &video_lines('l', 2_000)).await;
    let policy = TenantPolicy {
        weight: 3,
        ..TenantPolicy::default()
    };
    // The operator's change applies to the tenant's queued batches at once.
    assert!(
        abridge_control::set_tenant_policy(&w.store, &w.queue, "heavy", &policy)
            .await
            .unwrap()
    );

    // Weights hold for a worker that claims many items at once and for one whose items are
    // slow, so that its claims are small (a few slots come free at a time).
    let me = WorkerId::new();
    for (claims, size) in [(20, 40), (400, 2)] {
        let mut taken: HashMap<BatchId, usize> = HashMap::new();
        for _ in 0..claims {
            let claim = w
                .queue
                .claim(me, Duration::from_secs(60), size)
                .await
                .unwrap();
            for item in claim.items {
                *taken.entry(item.batch).or_default() += 1;
            }
        }
        let (h, l) = (taken[&heavy] as f64, taken[&light] as f64);
        assert!(
            (2.5..=3.5).contains(&(h / l)),
            "weight 3 against 1, claims of {size}: took {h} against {l}"
        );
    }
}

#[tokio::test]
async fn a_tenant_at_its_in_flight_cap_never_holds_more_and_others_go_on() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Items of each tenant running now, and the most seen at once.
    let running: Arc<Mutex<HashMap<BatchId, (usize, usize)>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let (r, d) = (running.clone(), done.clone());
    let p = processor(move |job: abridge_worker::Job| {
        let (r, d) = (r.clone(), d.clone());
        async move {
            {
                let mut m = r.lock().unwrap();
                let e = m.entry(job.batch_id).or_default();
                e.0 += 1;
                e.1 = e.1.max(e.0);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            r.lock().unwrap().get_mut(&job.batch_id).unwrap().0 -= 1;
            d.fetch_add(1, Ordering::SeqCst);
            ok("x")
        }
    });
    let (_env, w) = env_and_worker(p, |_| {}).await;
    w.store.ensure_tenant("capped", "whsec_test").await.unwrap();
    let policy = TenantPolicy {
        max_in_flight: Some(3),
        ..TenantPolicy::default()
    };
    assert!(w.store.set_tenant_policy("capped", &policy).await.unwrap());
    let capped = enqueue_as(&w, "capped", &video_lines('c', 30)).await;
    let free = enqueue_as(&w, "free", &video_lines('f', 60)).await;

    // Two workers, 16 slots each: only the cap holds the capped tenant back.
    let one = Running::start(w.clone(), 16);
    let two = Running::start(w.clone(), 16);
    wait_batch_finished(&w, capped, Duration::from_secs(60)).await;
    wait_batch_finished(&w, free, Duration::from_secs(60)).await;
    one.stop().await;
    two.stop().await;
    let m = running.lock().unwrap().clone();
    assert!(
        m[&capped].1 <= 3,
        "the capped tenant had {} in flight",
        m[&capped].1
    );
    assert!(
        m[&free].1 > 3,
        "the other tenant is not held to it: {}",
        m[&free].1
    );
    assert_eq!(done.load(Ordering::SeqCst), 90);
}
