//! Who a container runs as: the image's `User` or the CRI overrides (`run_as_user`,
//! `run_as_username`, `run_as_group`, `supplemental_groups`) resolved against the image's own
//! `/etc/passwd` and `/etc/group`, with the rules runc and containerd use: a numeric user needs no
//! passwd entry, a named one does; the primary group comes from passwd unless given; supplementary
//! groups are the groups listing the user, plus the ones the pod asks for.
//!
//! Reads only regular files inside the rootfs: a symlinked `/etc/passwd` could point at the host's.

use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("user {0:?} not found in the image's /etc/passwd")]
    NoSuchUser(String),
    #[error("group {0:?} not found in the image's /etc/group")]
    NoSuchGroup(String),
    #[error("invalid user specification {0:?}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserRequest {
    /// The image config's `User` ("name", "uid", "name:group", "uid:gid"), may be empty.
    pub image_user: String,
    pub run_as_user: Option<i64>,
    pub run_as_username: Option<String>,
    pub run_as_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    /// CRI `supplemental_groups_policy: Strict`: the image's /etc/group memberships are not added.
    pub strict_supplemental_groups: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: Option<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn read_inside(rootfs: &Path, rel: &str) -> String {
    let path = rootfs.join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => std::fs::read_to_string(&path).unwrap_or_default(),
        _ => String::new(),
    }
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry { name: f.first()?.to_string(), uid: f.get(2)?.parse().ok()?, gid: f.get(3)?.parse().ok()?, home: f.get(5).unwrap_or(&"").to_string() })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f.get(3).map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()).unwrap_or_default(),
            })
        })
        .collect()
}

fn id_of(v: i64, what: &str) -> Result<u32, UserError> {
    u32::try_from(v).map_err(|_| UserError::Invalid(format!("{what} {v}")))
}

/// Resolve `req` against the rootfs's passwd and group files.
pub fn resolve_user(rootfs: &Path, req: &UserRequest) -> Result<ResolvedUser, UserError> {
    let passwd = parse_passwd(&read_inside(rootfs, "etc/passwd"));
    let groups = parse_group(&read_inside(rootfs, "etc/group"));

    // Which user: CRI run_as_user, else run_as_username, else the image's User.
    let (user_part, group_part) = match (req.run_as_user, &req.run_as_username) {
        (Some(uid), _) => (uid.to_string(), None),
        (None, Some(name)) if !name.is_empty() => (name.clone(), None),
        _ => match req.image_user.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (req.image_user.clone(), None),
        },
    };
    let user_part = if user_part.is_empty() { "0".to_string() } else { user_part };
    let entry = match user_part.parse::<i64>() {
        Ok(uid) => {
            let uid = id_of(uid, "uid")?;
            passwd.iter().find(|e| e.uid == uid).map(|e| (e.name.clone(), e.uid, e.gid, e.home.clone())).unwrap_or((String::new(), uid, 0, String::new()))
        }
        Err(_) => passwd
            .iter()
            .find(|e| e.name == user_part)
            .map(|e| (e.name.clone(), e.uid, e.gid, e.home.clone()))
            .ok_or_else(|| UserError::NoSuchUser(user_part.clone()))?,
    };
    let (name, uid, mut gid, home) = entry;
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<i64>() {
            Ok(n) => id_of(n, "gid")?,
            Err(_) => groups.iter().find(|e| e.name == g).map(|e| e.gid).ok_or(UserError::NoSuchGroup(g))?,
        };
    }
    if let Some(g) = req.run_as_group {
        gid = id_of(g, "gid")?;
    }
    let mut additional: Vec<u32> = Vec::new();
    if !name.is_empty() && !req.strict_supplemental_groups {
        for g in groups.iter().filter(|g| g.members.iter().any(|m| m == &name)) {
            if g.gid != gid && !additional.contains(&g.gid) {
                additional.push(g.gid);
            }
        }
    }
    for g in &req.supplemental_groups {
        let g = id_of(*g, "supplemental group")?;
        if !additional.contains(&g) {
            additional.push(g);
        }
    }
    Ok(ResolvedUser { uid, gid, additional_gids: additional, home: (!home.is_empty()).then_some(home) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n").unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\napp:x:1000:\nextra:x:2000:app,other\n").unwrap();
        d
    }

    #[test]
    fn image_user_forms() {
        let r = rootfs();
        let u = |s: &str| resolve_user(r.path(), &UserRequest { image_user: s.into(), ..Default::default() });
        assert_eq!(u("").unwrap(), ResolvedUser { uid: 0, gid: 0, additional_gids: vec![], home: Some("/root".into()) });
        assert_eq!(u("app").unwrap(), ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![2000], home: Some("/home/app".into()) });
        assert_eq!(u("1000:2000").unwrap().gid, 2000);
        assert_eq!(u("app:extra").unwrap().gid, 2000);
        // A numeric uid without passwd entry is fine (gid 0), a missing name is not.
        assert_eq!(u("4242").unwrap(), ResolvedUser { uid: 4242, gid: 0, additional_gids: vec![], home: None });
        assert_eq!(u("ghost"), Err(UserError::NoSuchUser("ghost".into())));
        assert_eq!(u("app:nogroup"), Err(UserError::NoSuchGroup("nogroup".into())));
    }

    #[test]
    fn cri_overrides_win() {
        let r = rootfs();
        let req = UserRequest { image_user: "app".into(), run_as_user: Some(0), run_as_group: Some(5), supplemental_groups: vec![7, 7], ..Default::default() };
        assert_eq!(resolve_user(r.path(), &req).unwrap(), ResolvedUser { uid: 0, gid: 5, additional_gids: vec![7], home: Some("/root".into()) });
        let req = UserRequest { run_as_username: Some("app".into()), ..Default::default() };
        assert_eq!(resolve_user(r.path(), &req).unwrap().uid, 1000);
        assert!(resolve_user(r.path(), &UserRequest { run_as_user: Some(-1), ..Default::default() }).is_err());
    }

    #[test]
    fn symlinked_passwd_is_not_followed() {
        let r = tempfile::tempdir().unwrap();
        std::fs::create_dir(r.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.path().join("etc/passwd")).unwrap();
        // The host has root in /etc/passwd; through the symlink "root" must still be unknown.
        let req = UserRequest { image_user: "root".into(), ..Default::default() };
        assert_eq!(resolve_user(r.path(), &req), Err(UserError::NoSuchUser("root".into())));
    }
}
