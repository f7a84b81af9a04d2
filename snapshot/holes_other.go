//go:build !linux && !darwin

package snapshot

import (
	"errors"
	"os"
)

// This platform cannot find holes: every memory file counts as all data.

func seekData(*os.File, int64) (int64, error) { return 0, errors.ErrUnsupported }

func seekHole(*os.File, int64) (int64, error) { return 0, errors.ErrUnsupported }
