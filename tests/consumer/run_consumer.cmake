# Builds and tests tests/consumer against transmamba. Run by ctest as
#   cmake -DMODE=find_package|add_subdirectory -D... -P run_consumer.cmake
# MODE=find_package first installs the transmamba build tree TRANSMAMBA_BINARY_DIR
# into INSTALL_PREFIX and points the consumer at that install only.
cmake_minimum_required(VERSION 3.25)

foreach(var IN ITEMS MODE CONSUMER_SOURCE_DIR CONSUMER_BINARY_DIR GENERATOR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: ${var} is not set")
  endif()
endforeach()

# PREFIX_PATH arrives with '|' in place of ';' (see tests/CMakeLists.txt).
string(REPLACE "|" ";" prefix_path "${PREFIX_PATH}")

set(build_options -DCONSUMER_MODE=${MODE})
if(CXX_COMPILER)
  list(APPEND build_options -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
if(BUILD_TYPE)
  list(APPEND build_options -DCMAKE_BUILD_TYPE=${BUILD_TYPE})
endif()

if(MODE STREQUAL "find_package")
  foreach(var IN ITEMS TRANSMAMBA_BINARY_DIR INSTALL_PREFIX)
    if(NOT ${var})
      message(FATAL_ERROR "run_consumer.cmake: ${var} is not set")
    endif()
  endforeach()
  file(REMOVE_RECURSE "${INSTALL_PREFIX}")
  set(config_args)
  if(BUILD_TYPE)
    set(config_args --config "${BUILD_TYPE}")
  endif()
  execute_process(
    COMMAND "${CMAKE_COMMAND}" --install "${TRANSMAMBA_BINARY_DIR}"
            --prefix "${INSTALL_PREFIX}" ${config_args}
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "installing transmamba into ${INSTALL_PREFIX} failed (${rc})")
  endif()
  list(PREPEND prefix_path "${INSTALL_PREFIX}")
  # Find transmamba in the install only, never through the build tree's
  # package registry.
  list(APPEND build_options -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
elseif(MODE STREQUAL "add_subdirectory")
  if(NOT TRANSMAMBA_SOURCE_DIR)
    message(FATAL_ERROR "run_consumer.cmake: TRANSMAMBA_SOURCE_DIR is not set")
  endif()
  # CPU only: keeps the consumer build fast.
  list(APPEND build_options
    -DTRANSMAMBA_SOURCE_DIR=${TRANSMAMBA_SOURCE_DIR}
    -DTRANSMAMBA_ENABLE_CUDA=OFF)
else()
  message(FATAL_ERROR "run_consumer.cmake: MODE must be find_package or add_subdirectory")
endif()

# Handed over through the environment: a list does not survive the trip
# through --build-options as one -D argument.
if(prefix_path)
  if(DEFINED ENV{CMAKE_PREFIX_PATH} AND NOT "$ENV{CMAKE_PREFIX_PATH}" STREQUAL "")
    cmake_path(CONVERT "$ENV{CMAKE_PREFIX_PATH}" TO_CMAKE_PATH_LIST env_prefix_path)
    list(APPEND prefix_path ${env_prefix_path})
  endif()
  cmake_path(CONVERT "${prefix_path}" TO_NATIVE_PATH_LIST native_prefix_path NORMALIZE)
  set(ENV{CMAKE_PREFIX_PATH} "${native_prefix_path}")
endif()

# A fresh consumer build every time, so a stale cache cannot hide a problem.
file(REMOVE_RECURSE "${CONSUMER_BINARY_DIR}")

set(make_program_args)
if(MAKE_PROGRAM)
  set(make_program_args --build-makeprogram "${MAKE_PROGRAM}")
endif()
set(ctest_config_args)
if(BUILD_TYPE)
  set(ctest_config_args -C "${BUILD_TYPE}")
endif()

execute_process(
  COMMAND "${CMAKE_CTEST_COMMAND}" ${ctest_config_args}
    --build-and-test "${CONSUMER_SOURCE_DIR}" "${CONSUMER_BINARY_DIR}"
    --build-generator "${GENERATOR}"
    ${make_program_args}
    --build-options ${build_options}
    --test-command "${CMAKE_CTEST_COMMAND}" --output-on-failure ${ctest_config_args}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "consumer (${MODE}) failed (${rc})")
endif()
