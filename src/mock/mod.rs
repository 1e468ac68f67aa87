//! A local imitation of Graph's invokeAction endpoint and token endpoint (arrives with `run`).
