//! ImageStatus and the one conversion from an image record to the CRI `Image` message.

use std::collections::HashMap;

use k8s_cri::v1::{Image, ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value};

use super::{required_image, CriError, CriService};
use crate::image::manifest::{image_user, parse_config, ImageUser};
use crate::store::records::ImageRecord;

impl CriService {
    pub fn image_status(&self, req: ImageStatusRequest) -> Result<ImageStatusResponse, CriError> {
        let name = required_image(req.image.as_ref(), "image.image")?;
        // api.proto: "If the image isn't present, returns a response with ImageStatusResponse.Image set to nil."
        let Some(record) = self.images.resolve(&name)? else {
            return Ok(ImageStatusResponse { image: None, info: HashMap::new() });
        };
        let mut info = HashMap::new();
        if req.verbose {
            info.insert("info".to_string(), verbose_info(&record));
        }
        Ok(ImageStatusResponse { image: Some(cri_image(&record)), info })
    }
}

pub(super) fn cri_image(record: &ImageRecord) -> Image {
    let config = parse_config(&record.config_json).ok();
    let user = config.as_ref().and_then(|c| c.config.as_ref()).and_then(|c| c.user.as_deref());
    let (uid, username) = match image_user(user) {
        ImageUser::None => (None, String::new()),
        ImageUser::Uid(uid) => (Some(Int64Value { value: uid }), String::new()),
        ImageUser::Name(name) => (None, name),
    };
    Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid,
        username,
        spec: Some(ImageSpec { image: record.id.clone(), ..Default::default() }),
        pinned: record.pinned,
    }
}

/// containerd-style verbose info: one JSON document with the image config and where the image came from.
fn verbose_info(record: &ImageRecord) -> String {
    let config: serde_json::Value = serde_json::from_slice(&record.config_json).unwrap_or(serde_json::Value::Null);
    let layers: Vec<serde_json::Value> = record
        .layers
        .iter()
        .map(|l| serde_json::json!({"digest": l.blob_digest, "mediaType": l.media_type, "size": l.blob_size, "diffID": l.diff_id, "chainID": l.chain_id}))
        .collect();
    serde_json::json!({
        "imageSpec": config,
        "manifestDigest": record.manifest_digest,
        "manifestMediaType": record.manifest_media_type,
        "layers": layers,
        "pulledAtUnixNanos": record.pulled_at_unix_nanos,
    })
    .to_string()
}
