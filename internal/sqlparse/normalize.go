package sqlparse

import "unicode/utf8"

// cacheKey returns the text with every numeric and string literal replaced by a placeholder, so
// the cache holds one entry per statement shape: simple-protocol clients send their values
// inside the text (pgbench -S sends a new aid every time), and parsing each would cost far more
// than relaying it. Literals never decide whether a statement is read-only or which tables it
// reads, so statements with the same key have the same classification. The scanner follows
// PostgreSQL's lexer with standard_conforming_strings on, as pg_query parses: quoted
// identifiers, E” escape strings, dollar quotes, nested comments and $n parameters are kept
// apart from literals.
//
// Text that is not valid UTF-8 is its own key: the parser refuses it, and its literals must
// not make it share a key with text that parses.
func cacheKey(dst, b []byte) []byte {
	if !utf8.Valid(b) {
		return append(dst, b...)
	}
	i := 0
	for i < len(b) {
		c := b[i]
		switch {
		case c == '\'':
			escape := i > 0 && (b[i-1] == 'e' || b[i-1] == 'E') && (i < 2 || !identChar(b[i-2]))
			j := i + 1
			for j < len(b) {
				if escape && b[j] == '\\' {
					j += 2
					continue
				}
				if b[j] == '\'' {
					if j+1 < len(b) && b[j+1] == '\'' {
						j += 2
						continue
					}
					break
				}
				j++
			}
			if j >= len(b) { // unterminated: keep as is, the parser will refuse it
				return append(dst, b[i:]...)
			}
			dst = append(dst, '\'', '\'')
			i = j + 1
		case c == '"':
			j := i + 1
			for j < len(b) {
				if b[j] == '"' {
					if j+1 < len(b) && b[j+1] == '"' {
						j += 2
						continue
					}
					break
				}
				j++
			}
			if j >= len(b) {
				return append(dst, b[i:]...)
			}
			dst = append(dst, b[i:j+1]...)
			i = j + 1
		case c == '-' && i+1 < len(b) && b[i+1] == '-':
			j := i
			for j < len(b) && b[j] != '\n' {
				j++
			}
			dst = append(dst, b[i:j]...)
			i = j
		case c == '/' && i+1 < len(b) && b[i+1] == '*':
			depth, j := 1, i+2
			for j < len(b) && depth > 0 {
				switch {
				case b[j] == '/' && j+1 < len(b) && b[j+1] == '*':
					depth++
					j += 2
				case b[j] == '*' && j+1 < len(b) && b[j+1] == '/':
					depth--
					j += 2
				default:
					j++
				}
			}
			dst = append(dst, b[i:j]...)
			i = j
		case c == '$' && (i == 0 || !identChar(b[i-1])):
			j := i + 1
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				j++
			}
			if j > i+1 { // $n parameter
				dst = append(dst, b[i:j]...)
				i = j
				continue
			}
			for j < len(b) && identChar(b[j]) && b[j] != '$' {
				j++
			}
			if j < len(b) && b[j] == '$' { // dollar quote $tag$ ... $tag$
				tag := b[i : j+1]
				end := indexFrom(b, tag, j+1)
				if end < 0 {
					return append(dst, b[i:]...)
				}
				dst = append(dst, '\'', '\'')
				i = end + len(tag)
				continue
			}
			dst = append(dst, c)
			i++
		case c >= '0' && c <= '9' && (i == 0 || !identChar(b[i-1])):
			j := i
			for j < len(b) && (identChar(b[j]) && b[j] != '$' || b[j] == '.' ||
				(b[j] == '+' || b[j] == '-') && (b[j-1] == 'e' || b[j-1] == 'E')) {
				j++
			}
			dst = append(dst, '0')
			i = j
		default:
			dst = append(dst, c)
			i++
		}
	}
	return dst
}

func identChar(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func indexFrom(b, sub []byte, from int) int {
	for k := from; k+len(sub) <= len(b); k++ {
		if string(b[k:k+len(sub)]) == string(sub) {
			return k
		}
	}
	return -1
}
