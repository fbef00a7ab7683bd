"""HTTP plumbing shared by every domain's routes: problems, middleware, auth, health."""
