-- How many pull posts each user has made: a reader's pull query only visits the
-- followees that have any (most have none), each through its own index range.
ALTER TABLE nf_users ADD COLUMN pull_posts INTEGER NOT NULL DEFAULT 0;
UPDATE nf_users SET pull_posts = (SELECT COUNT(*) FROM nf_posts p WHERE p.author = nf_users.id AND p.fanout = 'pull');
