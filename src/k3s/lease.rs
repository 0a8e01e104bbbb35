//! The Lease `kube-system/sightline` (`coordination.k8s.io/v1`): which k3s
//! server runs the gated rollout.
//!
//! The rules follow client-go's leader election
//! (`k8s.io/client-go/tools/leaderelection/leaderelection.go`,
//! `tryAcquireOrRenew`): create the Lease if there is none; renew it when we
//! hold it; take it over only once `renewTime + leaseDurationSeconds` has
//! passed; and every write carries the `resourceVersion` that was read, so
//! the apiserver answers 409 to all but the first of two racing writers.
//! A 409 on a write decided from what was just read never turns into a
//! second attempt in the same pass: the loser reads who won and follows. Unlike client-go, which times expiry from when *it*
//! observed the record change, sightline compares `renewTime` with its own
//! clock, because `sightline apply` runs one pass per process; k3s servers
//! keep their clocks in step (etcd's leases need it too), and the takeover
//! margin is one poll.
//!
//! A holder that remembers the Lease it last wrote renews it with one PUT
//! carrying that `resourceVersion`, without reading it first: client-go's
//! fast path (`tryAcquireOrRenew`: "if we are the leader, try to update the
//! lock optimistically ... fall back to the slow path" on any error). A 409
//! means someone wrote the Lease since; [`renew_cached`] then says so and
//! the caller reads and decides as usual.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, K3sApi};

/// The Lease's namespace.
pub const NAMESPACE: &str = "kube-system";
/// The Lease's name.
pub const NAME: &str = "sightline";
const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";

/// `spec` of a Lease (`k8s.io/api/coordination/v1/types.go`, `LeaseSpec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    /// Who holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// How long a renewal is good for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<u64>,
    /// When the current holder took it (MicroTime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<String>,
    /// When the current holder last renewed it (MicroTime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<String>,
    /// How many times it changed hands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<u64>,
}

/// A Lease as read: its `resourceVersion` and spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The version a write must carry.
    pub resource_version: String,
    /// The spec.
    pub spec: LeaseSpec,
}

/// Who holds the Lease after this pass, as `status` shows it (without the
/// renewal time, so that a renewal alone does not rewrite the status file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// The holder's identity (its node name).
    pub holder: String,
    /// True when that is this node.
    pub held_here: bool,
    /// The lease duration in seconds.
    pub duration_s: u64,
    /// How many times it changed hands.
    pub transitions: u64,
}

/// What this pass does with the Lease, decided from what it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// There is none: create it.
    Create(LeaseSpec),
    /// We hold it (renew) or it expired (take over): write with the version read.
    Update {
        /// The version read.
        resource_version: String,
        /// The new spec.
        spec: LeaseSpec,
    },
    /// Someone else holds a live Lease.
    Follow(LeaseSpec),
}

/// MicroTime as the apiserver writes it (`2006-01-02T15:04:05.000000Z`,
/// k8s.io/apimachinery `pkg/apis/meta/v1/micro_time.go`).
pub fn micro_time(t: SystemTime) -> String {
    let micros = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_micros())
        .unwrap_or(0);
    let secs = crate::clock::rfc3339(t);
    format!("{}.{micros:06}Z", secs.trim_end_matches('Z'))
}

/// Parses a MicroTime (or a whole-second RFC 3339 UTC time).
pub fn parse_micro_time(s: &str) -> Option<SystemTime> {
    let (whole, frac) = match s.strip_suffix('Z')?.split_once('.') {
        Some((w, f)) => (format!("{w}Z"), f),
        None => (s.to_string(), ""),
    };
    let base = crate::clock::parse_rfc3339(&whole)?;
    let micros: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").get(..6)?.parse().ok()?
    };
    Some(base + Duration::from_micros(micros))
}

/// When a spec's holder stops holding it, if ever.
fn expiry(spec: &LeaseSpec) -> Option<SystemTime> {
    let renewed = parse_micro_time(spec.renew_time.as_deref()?)?;
    Some(renewed + Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0)))
}

/// client-go `tryAcquireOrRenew`, without the I/O.
pub fn next_step(current: Option<&Lease>, me: &str, duration: Duration, now: SystemTime) -> Step {
    let fresh = |acquire_time: Option<String>, transitions: u64| LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(duration.as_secs()),
        acquire_time: acquire_time.or_else(|| Some(micro_time(now))),
        renew_time: Some(micro_time(now)),
        lease_transitions: Some(transitions),
    };
    let Some(l) = current else {
        return Step::Create(fresh(None, 0));
    };
    let holder = l.spec.holder_identity.as_deref().unwrap_or("");
    let transitions = l.spec.lease_transitions.unwrap_or(0);
    if holder == me {
        return Step::Update {
            resource_version: l.resource_version.clone(),
            spec: fresh(l.spec.acquire_time.clone(), transitions),
        };
    }
    let expired = holder.is_empty() || expiry(&l.spec).is_none_or(|e| e <= now);
    if expired {
        Step::Update {
            resource_version: l.resource_version.clone(),
            spec: fresh(None, transitions + 1),
        }
    } else {
        Step::Follow(l.spec.clone())
    }
}

fn from_json(v: &Value) -> Result<Lease, String> {
    let resource_version = v["metadata"]["resourceVersion"]
        .as_str()
        .ok_or("the Lease has no metadata.resourceVersion")?
        .to_string();
    let spec = serde_json::from_value(v["spec"].clone()).map_err(|e| e.to_string())?;
    Ok(Lease {
        resource_version,
        spec,
    })
}

fn body(spec: &LeaseSpec, resource_version: Option<&str>) -> Value {
    let mut metadata = json!({"name": NAME, "namespace": NAMESPACE});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec})
}

fn decode(api_path: &str, v: &Value) -> Result<Lease, ApiError> {
    from_json(v).map_err(|detail| ApiError::Decode {
        url: api_path.to_string(),
        detail,
    })
}

/// Reads the Lease.
pub async fn get(api: &K3sApi) -> Result<Option<Lease>, ApiError> {
    let path = format!("{COLLECTION}/{NAME}");
    match api.get_opt::<Value>(&path).await? {
        Some(v) => decode(&path, &v).map(Some),
        None => Ok(None),
    }
}

fn view(spec: &LeaseSpec, me: &str) -> LeaseView {
    let holder = spec.holder_identity.clone().unwrap_or_default();
    LeaseView {
        held_here: holder == me,
        holder,
        duration_s: spec.lease_duration_seconds.unwrap_or(0),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// Who holds the Lease after a write or a read, and the Lease as last seen
/// (what the next pass may renew from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elected {
    /// For status.
    pub view: LeaseView,
    /// The Lease as the apiserver last answered it.
    pub lease: Lease,
}

fn elected(lease: Lease, me: &str) -> Elected {
    Elected {
        view: view(&lease.spec, me),
        lease,
    }
}

/// The Lease this node may renew without reading it first: it held it at
/// `cached` and that record has not expired by its own clock (client-go
/// tries the fast path only while `observedTime + LeaseDuration` is ahead).
pub fn renewable<'a>(cached: Option<&'a Lease>, me: &str, now: SystemTime) -> Option<&'a Lease> {
    cached.filter(|l| {
        l.spec.holder_identity.as_deref() == Some(me) && expiry(&l.spec).is_some_and(|e| e > now)
    })
}

/// The fast path: one PUT of the renewed `cached` record with its
/// `resourceVersion`. None: 409, someone wrote the Lease since.
pub async fn renew_cached(
    api: &K3sApi,
    cached: &Lease,
    me: &str,
    duration: Duration,
) -> Result<Option<Elected>, ApiError> {
    let Step::Update {
        resource_version,
        spec,
    } = next_step(Some(cached), me, duration, SystemTime::now())
    else {
        unreachable!("a Lease held by this node is always renewed");
    };
    let path = format!("{COLLECTION}/{NAME}");
    match api
        .send_json::<Value>(
            reqwest::Method::PUT,
            &path,
            &body(&spec, Some(&resource_version)),
        )
        .await
    {
        Ok(v) => Ok(Some(elected(decode(&path, &v)?, me))),
        Err(e) if e.is_conflict() => {
            tracing::info!(
                node = me,
                "the sightline Lease changed since this node renewed it; reading it"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Carries out `step` decided from `current`: creates, renews or takes the
/// Lease over, or follows its holder; on 409, reads who won.
pub async fn settle(
    api: &K3sApi,
    current: Option<Lease>,
    me: &str,
    duration: Duration,
) -> Result<Elected, ApiError> {
    let written = match next_step(current.as_ref(), me, duration, SystemTime::now()) {
        Step::Follow(_) => {
            return Ok(elected(current.expect("a Lease to follow was read"), me));
        }
        Step::Create(spec) => {
            api.send_json::<Value>(reqwest::Method::POST, COLLECTION, &body(&spec, None))
                .await
        }
        Step::Update {
            resource_version,
            spec,
        } => {
            let path = format!("{COLLECTION}/{NAME}");
            api.send_json::<Value>(
                reqwest::Method::PUT,
                &path,
                &body(&spec, Some(&resource_version)),
            )
            .await
        }
    };
    match written {
        Ok(v) => Ok(elected(decode(COLLECTION, &v)?, me)),
        // Another server wrote first: it holds the Lease now.
        Err(e) if e.is_conflict() => {
            tracing::info!(node = me, "another server won the sightline Lease");
            match get(api).await? {
                Some(l) => Ok(elected(l, me)),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// One round of leader election: the fast path from `cached` when this
/// node may renew it, else read, then create, renew or take over the Lease
/// when this node may; says who holds it afterwards.
pub async fn acquire_or_renew(
    api: &K3sApi,
    me: &str,
    duration: Duration,
    cached: Option<&Lease>,
) -> Result<Elected, ApiError> {
    if let Some(c) = renewable(cached, me, SystemTime::now())
        && let Some(e) = renew_cached(api, c, me, duration).await?
    {
        return Ok(e);
    }
    let current = get(api).await?;
    settle(api, current, me, duration).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: SystemTime, secs: u64) -> Lease {
        Lease {
            resource_version: "7".into(),
            spec: LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(micro_time(renewed)),
                renew_time: Some(micro_time(renewed)),
                lease_transitions: Some(2),
            },
        }
    }

    #[test]
    fn micro_time_round_trips() {
        let t = UNIX_EPOCH + Duration::from_micros(1_764_583_200_123_456);
        assert_eq!(micro_time(t), "2025-12-01T10:00:00.123456Z");
        assert_eq!(parse_micro_time(&micro_time(t)), Some(t));
    }

    #[test]
    fn a_live_lease_of_another_is_followed_and_an_expired_one_taken() {
        let now = SystemTime::now();
        let d = Duration::from_secs(15);
        let live = lease("b", now - Duration::from_secs(14), 15);
        assert!(matches!(
            next_step(Some(&live), "a", d, now),
            Step::Follow(_)
        ));
        let dead = lease("b", now - Duration::from_secs(16), 15);
        match next_step(Some(&dead), "a", d, now) {
            Step::Update {
                resource_version,
                spec,
            } => {
                assert_eq!(resource_version, "7");
                assert_eq!(spec.holder_identity.as_deref(), Some("a"));
                assert_eq!(spec.lease_transitions, Some(3));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_holder_renews_keeping_its_acquire_time() {
        let now = SystemTime::now();
        let mine = lease("a", now - Duration::from_secs(5), 15);
        match next_step(Some(&mine), "a", Duration::from_secs(15), now) {
            Step::Update { spec, .. } => {
                assert_eq!(spec.acquire_time, mine.spec.acquire_time);
                assert_eq!(spec.renew_time, Some(micro_time(now)));
                assert_eq!(spec.lease_transitions, Some(2));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            next_step(None, "a", Duration::from_secs(15), now),
            Step::Create(_)
        ));
    }
}
