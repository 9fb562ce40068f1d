//! The fenced SQL on a real Postgres, without workers or Redis: the statements run in the
//! orders races would run them, so `cargo test -p abridge-store` after editing one tests it.

mod fencing;
