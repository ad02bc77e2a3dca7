"""The dashboard's pages, one router per page group; `flywheel.review.app.create_app` includes
them. Shared dependencies (session, CSRF, templates, the catalog) live in `common`."""
