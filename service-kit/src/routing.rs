//! Route helpers both services mount their resources with.

use actix_web::{Route, guard, web};

/// A route for GET that answers HEAD too, as RFC 9110 §9.3.2 asks: the same status and
/// headers, without the body (actix-http drops the body of a response to HEAD and keeps
/// its `Content-Length`).
pub fn get_and_head() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}
