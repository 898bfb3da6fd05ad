//! ListImages, optionally filtered to the image one name resolves to.

use k8s_cri::v1::{ListImagesRequest, ListImagesResponse};

use super::image_status::cri_image;
use super::{CriError, CriService};

impl CriService {
    pub fn list_images(&self, req: ListImagesRequest) -> Result<ListImagesResponse, CriError> {
        let wanted = req.filter.and_then(|f| f.image).map(|s| s.image).filter(|s| !s.is_empty());
        let records = match wanted {
            // A filter resolves like ImageStatus does (id, tag, digest); an unknown or malformed name lists nothing.
            Some(name) => self.images.resolve(&name).ok().flatten().into_iter().collect(),
            None => self.images.list()?,
        };
        Ok(ListImagesResponse { images: records.iter().map(cri_image).collect() })
    }
}
