-- Projects and members: create_project, add_member and the role check runhub._authorize.
-- Users are plain uuids (runhub has no users table); the actor's role always comes from
-- project_members.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

\set owner   '''aaaaaaaa-0000-4000-8000-000000000001'''
\set owner2  '''aaaaaaaa-0000-4000-8000-000000000002'''
\set admin   '''aaaaaaaa-0000-4000-8000-000000000003'''
\set member  '''aaaaaaaa-0000-4000-8000-000000000004'''
\set extra   '''aaaaaaaa-0000-4000-8000-000000000005'''
\set nobody  '''aaaaaaaa-0000-4000-8000-0000000000ff'''
\set unknown '''bbbbbbbb-0000-4000-8000-0000000000ff'''

-- ---------------------------------------------------------------------------------------------
-- create_project, happy path: name trimmed, locale defaults to en, industry to null, and the
-- owner becomes the project's one member, with role owner.
SELECT runhub.create_project('  Corner Café  ', :owner, 'Europe/Rome', 'EUR') AS p \gset
SELECT isnt(:'p'::uuid, NULL, 'create_project returns the new project id');
SELECT results_eq(format($$SELECT name, owner_id, timezone, currency::text, locale, industry
                             FROM runhub.projects WHERE id = %L$$, :'p'),
                  format($$VALUES ('Corner Café', %L::uuid, 'Europe/Rome', 'EUR', 'en', NULL::text)$$, :owner),
                  'the project is stored: name trimmed, locale en, industry null');
SELECT results_eq(format($$SELECT user_id, role FROM runhub.project_members WHERE project_id = %L$$, :'p'),
                  format($$VALUES (%L::uuid, 'owner')$$, :owner),
                  'the owner is the one member, with role owner');
SELECT results_eq(format($$SELECT digest_enabled, digest_next_at, settings FROM runhub.projects WHERE id = %L$$, :'p'),
                  $$VALUES (false, NULL::timestamptz, '{}'::jsonb)$$,
                  'a new project has digests off and empty settings');

SELECT runhub.create_project('Boulangerie', :owner2, 'America/New_York', 'USD', 'fr', 'bakery_2-x') AS p2 \gset
SELECT results_eq(format($$SELECT locale, industry, timezone FROM runhub.projects WHERE id = %L$$, :'p2'),
                  $$VALUES ('fr', 'bakery_2-x', 'America/New_York')$$,
                  'explicit locale and industry are stored');
SELECT lives_ok(format($$SELECT runhub.create_project(%L, %L, 'UTC', 'JPY', 'ar')$$, repeat('x', 200), :owner),
                'a 200-character name, UTC, JPY and ar are accepted (upper bounds)');
SELECT lives_ok(format($$SELECT runhub.create_project('Etc', %L, 'Etc/GMT+5', 'KWD', 'de')$$, :owner),
                'an Etc/ zone name is accepted');
SELECT isnt(runhub.create_project('Twin', :owner, 'UTC', 'EUR'), :'p'::uuid,
            'a second project with the same owner gets its own id');

-- ---------------------------------------------------------------------------------------------
-- create_project refusals: each bad input gets its SQLSTATE and key, and nothing is written.
SELECT count(*) AS projects_before FROM runhub.projects \gset
SELECT count(*) AS members_before FROM runhub.project_members \gset

SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project(NULL, %L, 'UTC', 'EUR')$$, :owner)),
          'PT400 common.invalidInput name', 'null name: PT400 common.invalidInput (name)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('', %L, 'UTC', 'EUR')$$, :owner)),
          'PT400 common.invalidInput name', 'empty name: PT400 common.invalidInput (name)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('    ', %L, 'UTC', 'EUR')$$, :owner)),
          'PT400 common.invalidInput name', 'blank name: PT400 common.invalidInput (name)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project(E'\t\n', %L, 'UTC', 'EUR')$$, :owner)),
          'PT400 common.invalidInput name', 'a name of tabs and newlines: PT400 common.invalidInput (name)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project(E'\u00a0', %L, 'UTC', 'EUR')$$, :owner)),
          'PT400 common.invalidInput name', 'a name of a no-break space: PT400 common.invalidInput (name)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project(%L, %L, 'UTC', 'EUR')$$, repeat('x', 201), :owner)),
          'PT400 common.invalidInput name', '201-character name: PT400 common.invalidInput (name)');
SELECT is(pg_temp.refusal($$SELECT runhub.create_project('Shop', NULL, 'UTC', 'EUR')$$),
          'PT400 common.invalidInput owner', 'null owner: PT400 common.invalidInput (owner)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'Mars/Olympus', 'EUR')$$, :owner)),
          'PT400 projects.invalidTimezone', 'Mars/Olympus: PT400 projects.invalidTimezone');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, NULL, 'EUR')$$, :owner)),
          'PT400 projects.invalidTimezone', 'null timezone: PT400 projects.invalidTimezone');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'CEST', 'EUR')$$, :owner)),
          'PT400 projects.invalidTimezone', 'CEST (an abbreviation only): PT400 projects.invalidTimezone');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'UTC+3', 'EUR')$$, :owner)),
          'PT400 projects.invalidTimezone', 'UTC+3 (a POSIX string): PT400 projects.invalidTimezone');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'Europe/Rome ', 'EUR')$$, :owner)),
          'PT400 projects.invalidTimezone', 'a zone name with a trailing space: PT400 projects.invalidTimezone');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'UTC', 'XYZ')$$, :owner)),
          'PT400 projects.invalidCurrency', 'XYZ: PT400 projects.invalidCurrency');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'UTC', 'usd')$$, :owner)),
          'PT400 projects.invalidCurrency', 'usd (lower case): PT400 projects.invalidCurrency');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'UTC', NULL)$$, :owner)),
          'PT400 projects.invalidCurrency', 'null currency: PT400 projects.invalidCurrency');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'UTC', 'EUR', 'it')$$, :owner)),
          'PT400 projects.invalidLocale', 'locale it: PT400 projects.invalidLocale');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'UTC', 'EUR', NULL)$$, :owner)),
          'PT400 projects.invalidLocale', 'null locale: PT400 projects.invalidLocale');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'UTC', 'EUR', 'en', 'Bad Tag')$$, :owner)),
          'PT400 common.invalidInput industry', 'industry Bad Tag: PT400 common.invalidInput (industry)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'UTC', 'EUR', 'en', %L)$$, :owner, repeat('a', 41))),
          'PT400 common.invalidInput industry', '41-character industry: PT400 common.invalidInput (industry)');

SELECT is((SELECT count(*) FROM runhub.projects), :'projects_before'::bigint, 'refused create_project calls wrote no project');
SELECT is((SELECT count(*) FROM runhub.project_members), :'members_before'::bigint, 'refused create_project calls wrote no member');

-- Only IANA zone names, not abbreviations or files that happen to sit in the zoneinfo directory:
-- pg_timezone_names lists EST (a fixed UTC-5 zone that never observes DST, i.e. wrong for New York
-- half of the year), localtime (a symlink to the host's /etc/localtime: its meaning changes with
-- the server's configuration), posixrules and Factory.
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'EST', 'USD')$$, :owner)),
          'PT400 projects.invalidTimezone', 'EST (an abbreviation): PT400 projects.invalidTimezone');
SELECT is(ARRAY(SELECT tz FROM unnest(ARRAY['localtime', 'posixrules', 'Factory']) tz
                 WHERE pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, %L, 'USD')$$, :owner, tz))
                       IS DISTINCT FROM 'PT400 projects.invalidTimezone'),
          '{}'::text[],
          'localtime, posixrules and Factory (zoneinfo files, not zones) are refused');

-- The documented edges, both sides: a name of 1 character (trimmed), an industry tag of 40, each of
-- the supported locales (and only those), and an id another owner's project has.
SELECT lives_ok(format($$SELECT runhub.create_project(' x ', %L, 'UTC', 'EUR')$$, :owner),
                'a 1-character name (once trimmed) is accepted (lower bound)');
SELECT lives_ok(format($$SELECT runhub.create_project('Shop', %L, 'UTC', 'EUR', 'en', %L)$$, :owner, 'a' || repeat('9', 39)),
                'a 40-character industry is accepted (upper bound; 41 is refused above)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'UTC', 'EUR', 'en', '9bakery')$$, :owner)),
          'PT400 common.invalidInput industry', 'an industry starting with a digit: PT400 common.invalidInput (industry)');
SELECT is(ARRAY(SELECT l FROM unnest(ARRAY['en', 'ar', 'fr', 'es', 'de']) l
                 WHERE pg_temp.refusal(format($$SELECT runhub.create_project('Shop', %L, 'UTC', 'EUR', %L)$$, :owner, l)) <> 'no error'),
          '{}'::text[], 'each documented locale (en ar fr es de) is accepted');
SELECT is(runhub._locales(), ARRAY['en', 'ar', 'fr', 'es', 'de'], 'and they are runhub''s locales, in order');
SELECT is(pg_temp.detail(format($$SELECT runhub.create_project('Shop', %L, 'UTC', 'EUR', 'EN')$$, :owner)),
          '{"locale": "EN", "supported": "en, ar, fr, es, de"}'::jsonb,
          'a locale in the wrong case: projects.invalidLocale names it and the supported ones');
SELECT is(runhub.create_project('Chosen', :owner, 'UTC', 'EUR', id => 'aaaaaaaa-0000-4000-8000-00000000c0de'),
          'aaaaaaaa-0000-4000-8000-00000000c0de'::uuid, 'create_project with a chosen id returns that id');
SELECT is(runhub.create_project('Chosen again', :owner, 'Asia/Tokyo', 'JPY', id => 'aaaaaaaa-0000-4000-8000-00000000c0de'),
          'aaaaaaaa-0000-4000-8000-00000000c0de'::uuid, 'the same id by the same owner again: the first project');
SELECT results_eq($$SELECT name, timezone, currency::text FROM runhub.projects WHERE id = 'aaaaaaaa-0000-4000-8000-00000000c0de'$$,
                  $$VALUES ('Chosen', 'UTC', 'EUR')$$, '... unchanged: the first write wins, the other arguments are not compared');
SELECT is(pg_temp.caught(format($$SELECT runhub.create_project('Taken', %L, 'UTC', 'EUR', id => 'aaaaaaaa-0000-4000-8000-00000000c0de')$$, :owner2)) - 'hint',
          jsonb_build_object('sqlstate', 'PT409', 'message', 'projects.idInUse', 'detail', '{"projectId": "aaaaaaaa-0000-4000-8000-00000000c0de"}'),
          'the same id by another owner: PT409 projects.idInUse {projectId}');
SELECT is((SELECT count(*)::int FROM runhub.project_members WHERE project_id = 'aaaaaaaa-0000-4000-8000-00000000c0de'), 1,
          '... and nothing written: the project keeps its one member');

-- ---------------------------------------------------------------------------------------------
-- add_member(project, actor, user, role): adds, changes a role, refuses bad input, and never leaves a
-- project without an owner. Owners manage everyone; admins add and change members and admins but
-- never make an owner nor touch one; members manage nobody.
SELECT lives_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'admin')$$, :'p', :owner, :admin), 'the owner adds an admin');
SELECT lives_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'member')$$, :'p', :owner, :member), 'the owner adds a member');
SELECT results_eq(format($$SELECT user_id, role FROM runhub.project_members WHERE project_id = %L ORDER BY user_id$$, :'p'),
                  format($$VALUES (%L::uuid, 'owner'), (%L::uuid, 'admin'), (%L::uuid, 'member')$$, :owner, :admin, :member),
                  'the project has its owner, admin and member');

-- A member manages nobody: not a newcomer, not itself.
SELECT is(pg_temp.caught(format($$SELECT runhub.add_member(%L, %L, %L, 'member')$$, :'p', :member, :nobody)) - 'hint',
          jsonb_build_object('sqlstate', 'PT403', 'message', 'auth.roleRequired', 'detail', '{"role": "member", "required": "admin"}'),
          'a member adding someone: PT403 auth.roleRequired {required admin, role member}');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, %L, 'admin')$$, :'p', :member, :member)),
          'PT403 auth.roleRequired', 'a member promoting itself: PT403 auth.roleRequired');

-- An admin changes members and admins.
SELECT lives_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'admin')$$, :'p', :admin, :member), 'an admin changes an existing member''s role');
SELECT results_eq(format($$SELECT role FROM runhub.project_members WHERE project_id = %L AND user_id = %L$$, :'p', :member),
                  $$VALUES ('admin')$$, 'the role changed in place: one row, now admin');
SELECT lives_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'admin')$$, :'p', :admin, :member), 'setting the same role again is a no-op');
SELECT lives_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'admin')$$, :'p', :admin, :extra), 'an admin adds an admin');
SELECT lives_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'member')$$, :'p', :member, :extra), 'an admin demotes another admin to member');
SELECT results_eq(format($$SELECT role FROM runhub.project_members WHERE project_id = %L AND user_id = %L$$, :'p', :extra),
                  $$VALUES ('member')$$, 'the admin-added member has role member');

-- An admin never makes an owner nor changes an owner's role.
SELECT is(pg_temp.caught(format($$SELECT runhub.add_member(%L, %L, %L, 'owner')$$, :'p', :admin, :nobody)) - 'hint',
          jsonb_build_object('sqlstate', 'PT403', 'message', 'auth.roleRequired', 'detail', '{"role": "admin", "required": "owner"}'),
          'an admin adding an owner: PT403 auth.roleRequired {required owner, role admin}');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, %L, 'owner')$$, :'p', :admin, :admin)),
          'PT403 auth.roleRequired', 'an admin promoting itself to owner: PT403 auth.roleRequired');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, %L, 'owner')$$, :'p', :admin, :extra)),
          'PT403 auth.roleRequired', 'an admin promoting a member to owner: PT403 auth.roleRequired');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, %L, 'member')$$, :'p', :admin, :owner)),
          'PT403 auth.roleRequired', 'an admin demoting the owner: PT403 auth.roleRequired');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, %L, 'admin')$$, :'p', :admin, :owner)),
          'PT403 auth.roleRequired', 'an admin changing the owner to admin: PT403 auth.roleRequired');
SELECT results_eq(format($$SELECT user_id, role FROM runhub.project_members WHERE project_id = %L ORDER BY user_id$$, :'p'),
                  format($$VALUES (%L::uuid, 'owner'), (%L::uuid, 'admin'), (%L::uuid, 'admin'), (%L::uuid, 'member')$$,
                         :owner, :admin, :member, :extra),
                  'the refused calls changed no role: owner, admin, admin, member');

-- Bad input: the actor is checked first (a non-member or an unknown project learns nothing), then
-- the arguments.
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, %L, 'superuser')$$, :'p', :owner, :nobody)),
          'PT400 common.invalidInput role', 'role superuser: PT400 common.invalidInput (role)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, %L, 'Owner')$$, :'p', :owner, :nobody)),
          'PT400 common.invalidInput role', 'role Owner (wrong case): PT400 common.invalidInput (role)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, %L, NULL)$$, :'p', :owner, :nobody)),
          'PT400 common.invalidInput role', 'null role: PT400 common.invalidInput (role)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, NULL, 'member')$$, :'p', :owner)),
          'PT400 common.invalidInput user', 'null user: PT400 common.invalidInput (user)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, %L, 'member')$$, :unknown, :owner, :nobody)),
          'PT404 projects.notFound', 'unknown project: PT404 projects.notFound');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(NULL, %L, %L, 'member')$$, :owner, :nobody)),
          'PT400 common.invalidInput project', 'null project: PT400 common.invalidInput (project)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, NULL, %L, 'member')$$, :'p', :nobody)),
          'PT400 common.invalidInput actor', 'null actor: PT400 common.invalidInput (actor)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, %L, 'member')$$, :'p', :nobody, :nobody)),
          'PT404 projects.notFound', 'a non-member adding itself: PT404 projects.notFound');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, %L, 'member')$$, :'p2', :owner, :nobody)),
          'PT404 projects.notFound', 'the owner of another project: PT404 projects.notFound');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, NULL, 'superuser')$$, :'p', :nobody)),
          'PT404 projects.notFound', 'a non-member with bad arguments: PT404 first');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(NULL, NULL, NULL, 'superuser')$$)),
          'PT400 common.invalidInput project', 'everything null or bad: the project is named first');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, NULL, 'superuser')$$, :'p', :extra)),
          'PT403 auth.roleRequired', 'a member with bad arguments: PT403 first');
SELECT is_empty(format($$SELECT 1 FROM runhub.project_members WHERE user_id = %L$$, :nobody),
                'refused add_member calls added nobody');

-- The last owner cannot be demoted; once a second owner exists, the first one can be.
SELECT throws_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'admin')$$, :'p', :owner, :owner),
                 'PT409', 'projects.lastOwner', 'demoting the last owner: PT409 projects.lastOwner');
SELECT is((SELECT role FROM runhub.project_members WHERE project_id = :'p' AND user_id = :owner), 'owner',
          'the refused demotion left the owner''s role unchanged');
SELECT lives_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'owner')$$, :'p', :owner, :owner2), 'the owner adds a second owner');
SELECT lives_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'member')$$, :'p', :owner2, :owner),
                'with another owner present, an owner demotes the first owner');
SELECT is(pg_temp.refusal(format($$SELECT runhub.add_member(%L, %L, %L, 'owner')$$, :'p', :owner, :owner)),
          'PT403 auth.roleRequired', 'the demoted owner, now a member, cannot take the role back');
SELECT throws_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'member')$$, :'p', :owner2, :owner2),
                 'PT409', 'projects.lastOwner', 'demoting the now-only owner: PT409 projects.lastOwner');
SELECT results_eq(format($$SELECT user_id, role FROM runhub.project_members WHERE project_id = %L AND role = 'owner'$$, :'p'),
                  format($$VALUES (%L::uuid, 'owner')$$, :owner2),
                  'the project still has exactly its one owner');

-- ---------------------------------------------------------------------------------------------
-- runhub._authorize: a non-member learns nothing (PT404, as for an unknown project); a member below
-- the required role gets PT403. Members now: owner2 owner, owner member, admin admin, member admin,
-- extra member.
SELECT is(runhub._authorize(:'p', :owner2, 'owner'), 'owner', 'an owner passes an owner check and gets its role back');
SELECT is(runhub._authorize(:'p', :admin, 'admin'), 'admin', 'an admin passes an admin check');
SELECT is(runhub._authorize(:'p', :owner), 'member', 'a member passes the default (member) check');
SELECT is(pg_temp.refusal(format($$SELECT runhub._authorize(%L, %L)$$, :'p', :nobody)),
          'PT404 projects.notFound', 'a non-member: PT404 projects.notFound');
SELECT is(pg_temp.refusal(format($$SELECT runhub._authorize(%L, %L)$$, :unknown, :nobody)),
          'PT404 projects.notFound', 'an unknown project: the same PT404 projects.notFound (no existence leak)');
SELECT is(pg_temp.refusal(format($$SELECT runhub._authorize(%L, %L, 'admin')$$, :'p', :owner)),
          'PT403 auth.roleRequired', 'a member asking for admin: PT403 auth.roleRequired');
SELECT is((pg_temp.caught(format($$SELECT runhub._authorize(%L, %L, 'owner')$$, :'p', :admin)) ->> 'detail')::jsonb,
          '{"role": "admin", "required": "owner"}'::jsonb,
          'an admin asking for owner: PT403 names the required and the actual role');
SELECT is(pg_temp.refusal(format($$SELECT runhub._authorize(%L, NULL)$$, :'p')),
          'PT400 common.invalidInput actor', 'a null actor: PT400 common.invalidInput (actor)');

SELECT * FROM finish();
ROLLBACK;
