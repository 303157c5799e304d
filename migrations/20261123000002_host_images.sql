-- Image retention (DESIGN §1.3): which images on each host berth pulled or
-- built. Docker cannot label a pulled image, so provenance lives here: the
-- retention sweep removes only images recorded in this table.
--
-- Additive (expand): an older berth ignores the table, so the floor stays.

CREATE TABLE host_images (
    host         text NOT NULL,
    -- The local image ID (`sha256:…`), what the sweep removes by.
    image_id     text NOT NULL,
    -- What the image was made local as: `<repository>[:<tag>]@<digest>` for
    -- a pull, `<repository>:<commit12>` for a local build.
    reference    text NOT NULL,
    -- The runtime whose image this is; NULL for a row's explicit image.
    runtime      text,
    -- The manifest digest it was pulled by; NULL for a local build.
    digest       text
                 CONSTRAINT host_images_digest_check
                 CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    made         text NOT NULL
                 CONSTRAINT host_images_made_check CHECK (made IN ('pulled', 'built')),
    made_at      timestamptz NOT NULL DEFAULT now(),
    -- When a container last used it (or when it was made), as berth saw it.
    last_used_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, image_id)
);
