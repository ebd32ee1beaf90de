/* placeholder: being written */
#include "cws_internal.h"
