package cdc

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// capturedDDL turns a row of pgshift's DDL log (ddl: follow: state.CaptureDDL) into a schema
// change at its place in the stream. A row that does not have the log's shape stops the stream.
func capturedDDL(r *Relation, row []Value) (*Change, error) {
	text := map[string]string{}
	for i, c := range r.Columns {
		if i < len(row) && row[i].Kind == ValueText {
			text[c.Name] = string(row[i].Data)
		}
	}
	for _, need := range []string{"id", "first", "command", "search_path", "role_name", "session_role", "time_zone", "date_style", "interval_style", "command_tag", "objects"} {
		if _, ok := text[need]; !ok {
			return nil, fmt.Errorf("%w: a row of %s without its column %s (columns %d, values %d)", ErrUnknownMessage, r.Table, need, len(r.Columns), len(row))
		}
	}
	id, err := strconv.ParseInt(text["id"], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: a row of %s with id %q", ErrUnknownMessage, r.Table, text["id"])
	}
	d := &DDL{ID: id, First: text["first"] == "t", Command: text["command"], Tag: text["command_tag"],
		SearchPath: text["search_path"], Role: text["role_name"], SessionRole: text["session_role"],
		TimeZone: text["time_zone"], DateStyle: text["date_style"], IntervalStyle: text["interval_style"]}
	if err := json.Unmarshal([]byte(text["objects"]), &d.Objects); err != nil {
		return nil, fmt.Errorf("%w: row %d of %s: objects: %w", ErrUnknownMessage, id, r.Table, err)
	}
	return &Change{Kind: Schema, DDL: d}, nil
}
