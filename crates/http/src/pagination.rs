use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiError;

pub const MAX_PAGE_SIZE: u32 = 100;

/// `?page=1&page_size=20`.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
pub struct PageQuery {
    /// 1-based page number.
    pub page: Option<u32>,
    /// Items per page, at most 100.
    pub page_size: Option<u32>,
}

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub page_size: u32,
}

impl PageQuery {
    pub fn validate(self) -> Result<PageRequest, ApiError> {
        let page = self.page.unwrap_or(1);
        let page_size = self.page_size.unwrap_or(20);
        if page == 0 {
            return Err(ApiError::field("page", "must be at least 1"));
        }
        if page_size == 0 || page_size > MAX_PAGE_SIZE {
            return Err(ApiError::field(
                "page_size",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        Ok(PageRequest { page, page_size })
    }
}

impl PageRequest {
    pub fn limit(&self) -> i64 {
        self.page_size as i64
    }

    pub fn offset(&self) -> i64 {
        (self.page as i64 - 1) * self.page_size as i64
    }
}

/// `{items, page, page_size, total}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub page_size: u32,
    pub total: i64,
    /// Present and true when counting stopped at `total`: there are at
    /// least that many (a broad search is not counted to the end).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub total_capped: bool,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, req: PageRequest, total: i64) -> Self {
        Page {
            items,
            page: req.page,
            page_size: req.page_size,
            total,
            total_capped: false,
        }
    }

    /// The page of a count that stopped early: at least `total` in all.
    pub fn capped(self, capped: bool) -> Self {
        Page {
            total_capped: capped,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let p = PageQuery {
            page: None,
            page_size: None,
        }
        .validate()
        .unwrap();
        assert_eq!((p.page, p.page_size, p.offset()), (1, 20, 0));
        let p = PageQuery {
            page: Some(3),
            page_size: Some(100),
        }
        .validate()
        .unwrap();
        assert_eq!(p.offset(), 200);
        assert!(PageQuery {
            page: Some(0),
            page_size: None
        }
        .validate()
        .is_err());
        assert!(PageQuery {
            page: None,
            page_size: Some(101)
        }
        .validate()
        .is_err());
    }
}
