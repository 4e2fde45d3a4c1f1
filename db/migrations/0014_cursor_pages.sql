-- Deep pages by cursor, not OFFSET (docs/control.md, "Read path"): the list
-- of recordings goes on after a (opened_at, id) it was given, walking the
-- same indexes from there; page numbers stop at 20 (OFFSET reads and drops
-- every row before the page). Called with four arguments it is the page
-- function it was.

DROP FUNCTION recordings_page(bigint, timestamptz, integer, integer);
CREATE FUNCTION recordings_page(p_user bigint, p_at timestamptz, p_offset integer,
                                p_limit integer,
                                p_before_at timestamptz DEFAULT 'infinity',
                                p_before_id uuid DEFAULT 'ffffffff-ffff-ffff-ffff-ffffffffffff')
RETURNS TABLE (id uuid, device text, officer text, department text, opened_at timestamptz,
               sealed_at timestamptz, state text, segments bigint, bytes bigint,
               duration_ms bigint)
LANGUAGE sql STABLE AS $$
    SELECT r.id, dv.serial, o.username, od.name, r.opened_at, r.sealed_at, r.state,
           coalesce(r.segment_count, r.acked_segments), r.acked_bytes,
           coalesce((r.last_end_us - r.first_start_us) / 1000, 0)
    -- OFFSET 0: the scope is computed once, not once per branch that reads it
    FROM (SELECT v.* FROM (SELECT * FROM reader_scope(p_user, p_at) OFFSET 0) s
          CROSS JOIN LATERAL (
              (SELECT a.* FROM recordings a
               WHERE s.everything AND (a.opened_at, a.id) < (p_before_at, p_before_id)
               ORDER BY a.opened_at DESC, a.id DESC LIMIT p_offset + p_limit)
              UNION ALL
              (SELECT b.* FROM unnest(s.officers) AS u(officer_id)
               CROSS JOIN LATERAL (SELECT * FROM recordings rr
                                   WHERE rr.officer_id = u.officer_id
                                     AND (rr.opened_at, rr.id) < (p_before_at, p_before_id)
                                   ORDER BY rr.opened_at DESC, rr.id DESC
                                   LIMIT p_offset + p_limit) b
               WHERE cardinality(s.officers) <= 64)
              UNION ALL
              (SELECT c.* FROM recordings c
               WHERE cardinality(s.officers) > 64 AND c.officer_id = ANY (s.officers)
                 AND (c.opened_at, c.id) < (p_before_at, p_before_id)
               ORDER BY c.opened_at DESC, c.id DESC LIMIT p_offset + p_limit)) v
          ORDER BY v.opened_at DESC, v.id DESC LIMIT p_limit OFFSET p_offset) r
    LEFT JOIN devices dv ON dv.id = r.device_id
    LEFT JOIN users o ON o.id = r.officer_id
    LEFT JOIN departments od ON od.id = o.department_id
$$;
