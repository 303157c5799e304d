//! A model of one Docker host that carries out actions the way the
//! executor does, refusing what Docker refuses (a taken name, a volume in
//! use, an action on a missing container).

use chrono::{DateTime, Utc};

use crate::model::{ContainerState, Health, ObservedContainer, ObservedVolume};
use crate::plan::{Action, Op, Plan, Target};

#[derive(Clone, Debug, Default)]
pub struct Host {
    pub containers: Vec<ObservedContainer>,
    pub volumes: Vec<ObservedVolume>,
    next: u32,
}

impl Host {
    pub fn by_name(&self, name: &str) -> Option<&ObservedContainer> {
        self.containers.iter().find(|c| c.name == name)
    }

    fn find(
        &mut self,
        target: &Target,
        created: &Option<String>,
    ) -> Option<&mut ObservedContainer> {
        let id = match target {
            Target::Id(id) => Some(id.clone()),
            Target::Created => created.clone(),
        }?;
        self.containers.iter_mut().find(|c| c.id == id)
    }

    /// Carries out a plan's actions in order; the first refusal stops it.
    pub fn apply(&mut self, plan: &Plan, now: DateTime<Utc>) -> Result<(), String> {
        let mut created = None;
        self.run(&plan.actions, &mut created, now)
    }

    pub fn run(
        &mut self,
        actions: &[Action],
        created: &mut Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        for a in actions {
            self.step(a, created, now)
                .map_err(|e| format!("{a}: {e}"))?;
        }
        Ok(())
    }

    pub fn step(
        &mut self,
        a: &Action,
        created: &mut Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        match &a.op {
            Op::EnsureImage { .. } | Op::Preflight { .. } => {}
            Op::EnsureVolume(v) => {
                if !self.volumes.iter().any(|x| x.name == v.name) {
                    self.volumes.push(ObservedVolume {
                        name: v.name.clone(),
                        labels: v.labels.clone(),
                    });
                }
            }
            Op::RemoveVolume { name, below_epoch } => {
                let recorded = |v: &ObservedVolume| {
                    v.label(crate::model::LABEL_SESSION_EPOCH)
                        .map_or(Some(0), |e| e.parse::<i64>().ok())
                };
                let fresh = self.volumes.iter().any(|v| {
                    v.name == *name
                        && below_epoch.is_some_and(|e| recorded(v).is_some_and(|r| r >= e))
                });
                if fresh {
                    return Ok(());
                }
                let mount = format!("{name}:");
                if self.containers.iter().any(|c| {
                    c.material
                        .as_ref()
                        .is_some_and(|m| m.binds.iter().any(|b| b.starts_with(&mount)))
                }) {
                    return Err("volume is in use".into());
                }
                self.volumes.retain(|v| v.name != *name);
            }
            Op::Create(spec) => {
                if self.by_name(&spec.name).is_some() {
                    return Err("name is taken".into());
                }
                self.next += 1;
                let id = format!("model-{:04}", self.next);
                self.containers.push(ObservedContainer {
                    id: id.clone(),
                    name: spec.name.clone(),
                    labels: spec.labels.clone(),
                    state: ContainerState::Created,
                    health: Health::Starting,
                    image: spec.image.to_string(),
                    image_id: "sha256:model".into(),
                    created: now,
                    started_at: None,
                    finished_at: None,
                    restart_count: 0,
                    exit_code: None,
                    oom_killed: false,
                    networks: None,
                    material: Some(spec.material.clone()),
                });
                *created = Some(id);
            }
            Op::WriteFiles { target, .. } => {
                self.find(target, created).ok_or("no such container")?;
            }
            Op::Start { target } | Op::Restart { target, .. } => {
                let c = self.find(target, created).ok_or("no such container")?;
                c.state = ContainerState::Running;
                c.started_at = Some(now);
                c.health = Health::Starting;
            }
            Op::Stop { target, .. } => {
                let c = self.find(target, created).ok_or("no such container")?;
                if c.state != ContainerState::Created {
                    c.state = ContainerState::Exited;
                    c.exit_code = Some(0);
                }
            }
            Op::Connect {
                target, network, ..
            } => {
                let c = self.find(target, created).ok_or("no such container")?;
                if let Some(networks) = c.networks.as_mut().filter(|n| !n.contains(network)) {
                    networks.push(network.clone());
                }
            }
            Op::Rename { target, to } => {
                let id = self
                    .find(target, created)
                    .ok_or("no such container")?
                    .id
                    .clone();
                if self.containers.iter().any(|c| c.name == *to && c.id != id) {
                    return Err("name is taken".into());
                }
                if let Some(c) = self.find(target, created) {
                    c.name = to.clone();
                }
            }
            Op::WaitReady { target, .. } => {
                let c = self.find(target, created).ok_or("no such container")?;
                if c.state != ContainerState::Running {
                    return Err("not running".into());
                }
                c.health = Health::Healthy;
            }
            Op::RemoveContainer { target } => {
                let id = match target {
                    Target::Id(id) => Some(id.clone()),
                    Target::Created => created.clone(),
                };
                if let Some(id) = id {
                    self.containers.retain(|c| c.id != id);
                }
            }
        }
        Ok(())
    }

    /// Time passes: every running container has passed its health check.
    pub fn settle(&mut self) {
        for c in &mut self.containers {
            if c.state == ContainerState::Running {
                c.health = Health::Healthy;
            }
        }
    }
}
